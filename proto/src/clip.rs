//! Bounded views of input-derived text, for log lines, Event messages and
//! error messages: a request may carry a megabyte-long pod name or model
//! id, and copying it whole into every line that mentions it lets one
//! request write gigabytes of log.

use std::fmt;

/// Longest input-derived text, in bytes, one log field or message quotes.
/// Kubernetes names are at most 253 bytes, so real names pass whole.
pub const TEXT_LIMIT: usize = 256;

/// Longest message, in bytes, built from input (an error with several
/// quoted fields) that a log line, an Event or a reply carries.
pub const MESSAGE_LIMIT: usize = 1024;

/// `text`, cut to [`TEXT_LIMIT`] bytes (on a character boundary) with a
/// note of how much was left out; use it wherever input reaches a log line.
pub fn clip(text: &str) -> Clipped<'_> {
    clip_to(text, TEXT_LIMIT)
}

/// `text`, shown in at most `limit` bytes, the note of what was cut
/// included (for a `limit` of at least 32); cut on a character boundary.
pub fn clip_to(text: &str, limit: usize) -> Clipped<'_> {
    if text.len() <= limit {
        return Clipped {
            kept: text,
            omitted: 0,
        };
    }
    // "…[" + digits + " more bytes]", with the digits of the whole length
    // as an upper bound of the omitted count's.
    let note = "…[".len() + text.len().to_string().len() + " more bytes]".len();
    let mut end = limit.saturating_sub(note);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Clipped {
        kept: &text[..end],
        omitted: text.len() - end,
    }
}

/// A possibly shortened text; its `Display` shows what was left out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clipped<'a> {
    kept: &'a str,
    omitted: usize,
}

impl Clipped<'_> {
    /// Whether anything was cut.
    pub fn is_cut(&self) -> bool {
        self.omitted > 0
    }
}

impl fmt::Display for Clipped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kept)?;
        if self.omitted > 0 {
            write!(f, "…[{} more bytes]", self.omitted)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_passes_whole() {
        let name = "a".repeat(253);
        assert_eq!(clip(&name).to_string(), name);
        assert!(!clip(&name).is_cut());
    }

    #[test]
    fn long_text_is_cut_with_a_note_within_the_limit() {
        let long = "p".repeat(1 << 20);
        let shown = clip(&long).to_string();
        assert!(shown.len() <= TEXT_LIMIT, "{}", shown.len());
        assert!(shown.starts_with("ppp"), "{shown}");
        let omitted = (1 << 20) - shown.find('…').unwrap();
        assert!(
            shown.ends_with(&format!("…[{omitted} more bytes]")),
            "{shown}"
        );
        assert!(clip(&long).is_cut());
    }

    #[test]
    fn cuts_on_a_character_boundary() {
        let s = "é".repeat(200); // 400 bytes, 2 per character
        for limit in 32..64 {
            let shown = clip_to(&s, limit).to_string();
            assert!(shown.len() <= limit, "{limit}: {shown}");
            assert!(shown.starts_with('é'), "{limit}: {shown}");
        }
    }
}
