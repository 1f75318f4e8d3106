//! keyflip-twin: a local Azure-compatible HTTPS service for testing keyflip.
