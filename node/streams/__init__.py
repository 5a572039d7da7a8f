"""Subscription streams: who gets which events, and the stream itself (authorizations: node/authorizations)."""
