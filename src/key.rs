//! The two storage account keys, by name.
//!
//! Azure calls them `key1` and `key2`; `kerb1`/`kerb2` (Azure Files AD keys) are not
//! rotated by keyflip. Which of the two is *active* (held by consumers) and which is
//! *standby* changes with every rotation, so code speaks of `KeyName`s, never of
//! "primary" and "secondary".

use std::fmt;
use std::str::FromStr;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum KeyName {
    Key1,
    Key2,
}

impl KeyName {
    pub const BOTH: [KeyName; 2] = [KeyName::Key1, KeyName::Key2];

    /// The other key of the pair.
    pub fn other(self) -> Self {
        match self {
            KeyName::Key1 => KeyName::Key2,
            KeyName::Key2 => KeyName::Key1,
        }
    }

    /// The name Azure uses on the wire (`keyName` in `regenerateKey`, `listKeys`).
    pub fn as_str(self) -> &'static str {
        match self {
            KeyName::Key1 => "key1",
            KeyName::Key2 => "key2",
        }
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown key name '{0}': expected key1 or key2")]
pub struct UnknownKeyName(pub String);

impl FromStr for KeyName {
    type Err = UnknownKeyName;

    /// Case-insensitive, as Azure treats key names.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "key1" => Ok(KeyName::Key1),
            "key2" => Ok(KeyName::Key2),
            _ => Err(UnknownKeyName(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively_and_pairs_up() {
        assert_eq!("KEY2".parse::<KeyName>(), Ok(KeyName::Key2));
        assert_eq!(KeyName::Key1.other(), KeyName::Key2);
        assert_eq!(KeyName::Key2.other().as_str(), "key1");
        assert!("kerb1".parse::<KeyName>().is_err());
    }
}
