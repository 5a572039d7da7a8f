"""Subscription streams: who gets which events, the authorizations behind it, and the stream itself."""
