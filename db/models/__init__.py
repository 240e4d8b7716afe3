"""Every LLMWS table; importing this package registers them all on ``Base.metadata`` (Alembic relies on it)."""

from db.models.audit import AuditLog
from db.models.chat import Conversation, Message, Project, SystemPrompt
from db.models.gateway import ModelDeployment, ModelEntry, Provider
from db.models.jobs import BackgroundJob
from db.models.limits import RateWindow
from db.models.streams import ChatStream, ChatStreamEvent
from db.models.usage import UsageDaily, UsageLog
from db.models.users import ApiKey, AuthSession, Role, User
from db.models.ws import WsEvent, WsSession

__all__ = [
    "ApiKey",
    "AuditLog",
    "AuthSession",
    "BackgroundJob",
    "ChatStream",
    "ChatStreamEvent",
    "Conversation",
    "Message",
    "ModelDeployment",
    "ModelEntry",
    "Project",
    "Provider",
    "RateWindow",
    "Role",
    "SystemPrompt",
    "UsageDaily",
    "UsageLog",
    "User",
    "WsEvent",
    "WsSession",
]
