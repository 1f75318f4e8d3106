//! The durable record of every rotation: an intent before each effect, a result after.
