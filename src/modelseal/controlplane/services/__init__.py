"""The control plane's logic. Every function takes the session and the caller's vendor."""
