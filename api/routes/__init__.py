"""HTTP routes: parse, call a service, return. Every router but ``health`` and the public part of ``auth``
requires a principal at router level, so a route added later cannot forget it."""
