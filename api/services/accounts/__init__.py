"""Accounts: users, passwords, logins, API keys, the principal a credential stands for, and its cache."""
