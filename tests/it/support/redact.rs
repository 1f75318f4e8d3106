//! Output with what changes from run to run (and from twin to twin) replaced by
//! placeholders, so two runs of a command can be compared: times, ids and hex values
//! (rotation ids, fingerprints, Key Vault version ids), durations, key ages, and the
//! literal strings a test names (twin URLs, temporary directories). What is left is
//! what a command says: the same command on an equivalent state must leave the same.

/// `text` with `literal` replacements made first, then the patterns above.
pub fn redact(text: &str, literal: &[(&str, &str)]) -> String {
    let mut text = text.to_owned();
    for (from, to) in literal {
        text = text.replace(from, to);
    }
    let text = request_counts(&tokens(&caller(&text)));
    text.lines().map(line).collect::<Vec<_>>().join("\n")
}

/// A caller's request count in the logs (`9 request(s)`) grows with how long the run
/// took, like a duration: `COUNT request(s)`, also when a line break falls between the
/// count and `request(s)`.
fn request_counts(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("request(s)") {
        let head = &rest[..at];
        let spaced = head.trim_end();
        let number = spaced.trim_end_matches(|c: char| c.is_ascii_digit());
        if number.len() < spaced.len()
            && number.ends_with(char::is_whitespace)
            && spaced.len() < head.len()
        {
            out.push_str(number);
            out.push_str("COUNT");
            out.push_str(&head[spaced.len()..]);
        } else {
            out.push_str(head);
        }
        out.push_str("request(s)");
        rest = &rest[at + "request(s)".len()..];
    }
    out.push_str(rest);
    out
}

/// `asked by uid 1000 (alice)` depends on who runs the tests: `asked by CALLER`.
fn caller(text: &str) -> String {
    const ASKED: &str = "asked by uid ";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(ASKED) {
        out.push_str(&rest[..at]);
        out.push_str("asked by CALLER");
        rest = rest[at + ASKED.len()..].trim_start_matches(|c: char| c.is_ascii_digit());
        if rest.starts_with(" (")
            && let Some(end) = rest.find(')')
        {
            rest = &rest[end + 1..];
        }
    }
    out.push_str(rest);
    out
}

fn is_hex(c: char) -> bool {
    c.is_ascii_hexdigit()
}

/// Times (`2026-03-02T00:00:00.123Z`, `2026-03-02 00:00:00 UTC`) and runs of 12 or
/// more hex digits (dashes allowed inside) become `TIME` and `HEX`.
fn tokens(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let boundary = i == 0 || !chars[i - 1].is_ascii_alphanumeric();
        if boundary && let Some(n) = time_len(&chars[i..]).or_else(|| clock_len(&chars[i..])) {
            out.push_str("TIME");
            i += n;
            continue;
        }
        if boundary {
            let run = chars[i..]
                .iter()
                .take_while(|c| is_hex(**c) || **c == '-')
                .count();
            let digits = chars[i..i + run].iter().filter(|c| is_hex(**c)).count();
            let ends = chars
                .get(i + run)
                .is_none_or(|c| !c.is_ascii_alphanumeric());
            if digits >= 12 && ends {
                out.push_str("HEX");
                i += run;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

fn time_len(c: &[char]) -> Option<usize> {
    let digit = |i: usize| c.get(i).is_some_and(char::is_ascii_digit);
    let at = |i: usize, ch: char| c.get(i) == Some(&ch);
    let date = (0..4).all(digit)
        && at(4, '-')
        && digit(5)
        && digit(6)
        && at(7, '-')
        && digit(8)
        && digit(9);
    if !date {
        return None;
    }
    if !(at(10, 'T') || at(10, ' ')) || !(digit(11) && digit(12) && at(13, ':')) {
        return Some(10);
    }
    let mut n = 11;
    while c
        .get(n)
        .is_some_and(|ch| ch.is_ascii_digit() || *ch == ':' || *ch == '.')
    {
        n += 1;
    }
    if at(n, 'Z') {
        n += 1;
    } else if c[n..].starts_with(&[' ', 'U', 'T', 'C']) {
        n += 4;
    } else if at(n, '+') {
        n += 6;
    }
    Some(n)
}

/// `03-01 12:00:00` (a table's compact time) or `12:00:00` (a time of day).
fn clock_len(c: &[char]) -> Option<usize> {
    let digit = |i: usize| c.get(i).is_some_and(char::is_ascii_digit);
    let at = |i: usize, ch: char| c.get(i) == Some(&ch);
    let clock = |o: usize| {
        digit(o)
            && digit(o + 1)
            && at(o + 2, ':')
            && digit(o + 3)
            && digit(o + 4)
            && at(o + 5, ':')
            && digit(o + 6)
            && digit(o + 7)
            && !c.get(o + 8).is_some_and(char::is_ascii_alphanumeric)
    };
    if digit(0) && digit(1) && at(2, '-') && digit(3) && digit(4) && at(5, ' ') && clock(6) {
        return Some(14);
    }
    clock(0).then_some(8)
}

/// A table cell of key ages: `3d/40s`, `?/2h`.
fn is_ages(word: &str) -> bool {
    let age = |a: &str| {
        a == "?"
            || (a.len() > 1
                && a[..a.len() - 1].chars().all(|c| c.is_ascii_digit())
                && a.ends_with(['s', 'm', 'h', 'd']))
    };
    word.split_once('/').is_some_and(|(a, b)| age(a) && age(b))
}

/// Durations and ages, which depend on how fast each run went.
fn line(l: &str) -> String {
    if let Some((head, _)) = l.split_once("key ages:") {
        return format!("{head}key ages: AGES");
    }
    let mut l = l
        .split(' ')
        .map(|w| if is_ages(w) { "AGES" } else { w })
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(a) = l.find("\"duration_ms\": ") {
        let start = a + "\"duration_ms\": ".len();
        let end = l[start..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(l.len(), |e| start + e);
        l.replace_range(start..end, "MS");
    }
    if let Some(a) = l.find("took ") {
        let start = a + "took ".len();
        let end = l[start..].find(" (").map_or(l.len(), |e| start + e);
        l.replace_range(start..end, "DURATION");
    }
    // `(0.1s)` and `(0.1s):` after a step.
    let mut out = String::new();
    let mut rest = l.as_str();
    while let Some(p) = rest.find('(') {
        out.push_str(&rest[..=p]);
        rest = &rest[p + 1..];
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if n > 0 && rest[n..].starts_with("s)") {
            out.push_str("SECS");
            rest = &rest[n + 1..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders() {
        let text = "rotation 3f2a6c1e-8a3b-4c5d-9e6f-0a1b2c3d4e5f at 2026-03-02T00:00:01.5Z, fp:5cbe1ba5d535 took 1m 2s (23 steps) (0.1s): x 2026-03-02 00:00:00 UTC\n  key ages:      key1 3d 4h\n    \"duration_ms\": 42,\ndemo  key2  0s/6s    12-06 02:18:03  now  ok, retired at 02:18:03";
        assert_eq!(
            redact(text, &[]),
            "rotation HEX at TIME, fp:HEX took DURATION (23 steps) (SECS): x TIME\n  key ages: AGES\n    \"duration_ms\": MS,\ndemo  key2  AGES    TIME  now  ok, retired at TIME"
        );
    }

    #[test]
    fn a_callers_request_count_but_no_other_number() {
        assert_eq!(
            redact(
                "x ListContainers with AccountKey, 10 request(s), last y; 3 steps",
                &[]
            ),
            "x ListContainers with AccountKey, COUNT request(s), last y; 3 steps"
        );
        // Wrapped between the count and the word, as at 60 columns.
        assert_eq!(
            redact("AccountKey, 9\n  request(s), 4 steps", &[]),
            "AccountKey, COUNT\n  request(s), 4 steps"
        );
    }
}
