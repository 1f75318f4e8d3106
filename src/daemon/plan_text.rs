//! The text of a kept plan, stored as the lines where it differs from another plan's
//! text when that is much smaller.
//!
//! Fleets of thousands of plans are written from a template: plan after plan has the
//! same lines but for a name or an id (the bench's plans differ in 3 of 18 lines, by a
//! few characters each). Kept whole, the text was the largest part of an idle plan's
//! memory. Kept as a patch against the first text of the load with as many lines (a
//! *base*, shared), it costs the changed middle of each differing line.
//!
//! Promise: [`PlanText::text`] gives back exactly the text it was made from, byte for
//! byte. [`Bases::keep`] checks this when it builds a patch and keeps the text whole
//! when the patch would not give it back, or would not save at least half.

use std::collections::HashMap;
use std::sync::Arc;

/// Distinct line counts a load keeps a base for; plans of other shapes stay whole.
const MAX_BASES: usize = 64;

#[derive(Clone)]
pub(super) enum PlanText {
    Whole(Arc<str>),
    /// `base` with some lines changed. `patch` holds one record per changed line: the
    /// line's index, how many bytes it keeps from the start and from the end of the
    /// base's line (u32 little-endian each), the length of the new middle (u32) and
    /// its bytes.
    Patched {
        base: Arc<str>,
        patch: Box<[u8]>,
    },
}

impl std::fmt::Debug for PlanText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlanText::Whole(text) => write!(f, "Whole({} bytes)", text.len()),
            PlanText::Patched { base, patch } => write!(
                f,
                "Patched({} bytes of base, {} bytes of patch)",
                base.len(),
                patch.len()
            ),
        }
    }
}

impl PlanText {
    /// The text, rebuilt when it is a patch.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            PlanText::Whole(text) => std::borrow::Cow::Borrowed(text),
            PlanText::Patched { base, patch } => std::borrow::Cow::Owned(apply(base, patch)),
        }
    }
}

/// The bases of one load, by line count.
#[derive(Default)]
pub(super) struct Bases(HashMap<usize, Arc<str>>);

impl Bases {
    /// `text` as compactly as it can be kept.
    pub fn keep(&mut self, text: &str) -> PlanText {
        let lines = text.split_inclusive('\n').count();
        let base = match self.0.get(&lines) {
            Some(base) => base.clone(),
            None => {
                let whole: Arc<str> = Arc::from(text);
                if self.0.len() < MAX_BASES {
                    self.0.insert(lines, whole.clone());
                }
                return PlanText::Whole(whole);
            }
        };
        match diff(&base, text) {
            Some(patch) if patch.len() <= text.len() / 2 && apply(&base, &patch) == text => {
                PlanText::Patched {
                    base,
                    patch: patch.into_boxed_slice(),
                }
            }
            _ => PlanText::Whole(Arc::from(text)),
        }
    }
}

/// The records that turn `base` into `text`, line by line; `None` when the two have
/// different numbers of lines.
fn diff(base: &str, text: &str) -> Option<Vec<u8>> {
    let mut patch = Vec::new();
    let mut old = base.split_inclusive('\n');
    let mut new = text.split_inclusive('\n');
    let mut index: u32 = 0;
    loop {
        match (old.next(), new.next()) {
            (None, None) => return Some(patch),
            (Some(a), Some(b)) => {
                if a != b {
                    let (a, b) = (a.as_bytes(), b.as_bytes());
                    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
                    let room = a.len().min(b.len()) - prefix;
                    let suffix = a
                        .iter()
                        .rev()
                        .zip(b.iter().rev())
                        .take(room)
                        .take_while(|(x, y)| x == y)
                        .count();
                    let middle = &b[prefix..b.len() - suffix];
                    for n in [index as usize, prefix, suffix, middle.len()] {
                        patch.extend_from_slice(&u32::try_from(n).ok()?.to_le_bytes());
                    }
                    patch.extend_from_slice(middle);
                }
                index = index.checked_add(1)?;
            }
            _ => return None,
        }
    }
}

/// `base` with `patch` applied. A patch is only kept after this gave the text back,
/// so the reads below stay in bounds; should one not, the base's bytes are used.
fn apply(base: &str, patch: &[u8]) -> String {
    let mut out = Vec::with_capacity(base.len() + patch.len());
    let mut records = patch;
    let mut next = read_record(&mut records);
    for (i, line) in base.split_inclusive('\n').enumerate() {
        let line = line.as_bytes();
        match next {
            Some((index, prefix, suffix, middle)) if index == i => {
                out.extend_from_slice(line.get(..prefix).unwrap_or(line));
                out.extend_from_slice(middle);
                out.extend_from_slice(
                    line.get(line.len().saturating_sub(suffix)..)
                        .unwrap_or_default(),
                );
                next = read_record(&mut records);
            }
            _ => out.extend_from_slice(line),
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

type Record<'a> = (usize, usize, usize, &'a [u8]);

fn read_record<'a>(records: &mut &'a [u8]) -> Option<Record<'a>> {
    let mut field = || -> Option<usize> {
        let (head, rest) = records.split_first_chunk::<4>()?;
        *records = rest;
        usize::try_from(u32::from_le_bytes(*head)).ok()
    };
    let (index, prefix, suffix, len) = (field()?, field()?, field()?, field()?);
    let (middle, rest) = records.split_at_checked(len)?;
    *records = rest;
    Some((index, prefix, suffix, middle))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(name: &str, extra: &str) -> String {
        format!(
            "description = \"fleet account {name}\"\nstorage_account = \"/subscriptions/s/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/{name}\"\n[schedule]\ncron = \"0 3 * * *\"\n[[key_vault]]\nvault = \"https://kv.vault.azure.net\"\nsecret = \"{name}-key\"{extra}"
        )
    }

    #[test]
    fn a_template_fleet_is_kept_as_small_patches_that_give_each_text_back() {
        let mut bases = Bases::default();
        let first = plan("st0001", "\n");
        assert!(matches!(bases.keep(&first), PlanText::Whole(_)));
        for name in ["st0002", "stlonger17", "s", "st0002é"] {
            let text = plan(name, "\n");
            let kept = bases.keep(&text);
            let PlanText::Patched { patch, .. } = &kept else {
                panic!("{name}: kept whole: {kept:?}");
            };
            assert!(patch.len() < 80, "{name}: {} bytes of patch", patch.len());
            assert_eq!(kept.text(), text);
        }
    }

    #[test]
    fn texts_of_another_shape_or_mostly_different_are_kept_whole() {
        let mut bases = Bases::default();
        bases.keep(&plan("st0001", "\n"));
        // No newline at the end: the same number of lines, the last one changed.
        let text = plan("st0002", "");
        let kept = bases.keep(&text);
        assert_eq!(kept.text(), text);
        // A line more: a base of its own.
        let longer = plan("st0003", "\nformat = \"raw-key\"\n");
        assert!(matches!(bases.keep(&longer), PlanText::Whole(_)));
        // Every line different: whole.
        let other: String = (0..7).map(|i| format!("x{i} = {i}\n")).collect();
        let other_base: String = (0..7).map(|i| format!("y{i} = \"{i}{i}{i}\"\n")).collect();
        let mut bases = Bases::default();
        bases.keep(&other_base);
        let kept = bases.keep(&other);
        assert!(matches!(kept, PlanText::Whole(_)), "{kept:?}");
        assert_eq!(kept.text(), other);
    }

    #[test]
    fn a_line_that_grows_inside_a_repeated_run_keeps_its_bytes() {
        // Prefix and suffix overlap in the shorter line: the middle must not go negative.
        let mut bases = Bases::default();
        bases.keep("a = \"aa\"\nb = 1\n");
        for text in [
            "a = \"aaaa\"\nb = 1\n",
            "a = \"a\"\nb = 1\n",
            "a = \"\"\nb = 2\n",
        ] {
            assert_eq!(bases.keep(text).text(), text);
        }
    }
}
