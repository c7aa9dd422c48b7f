//! The progress channel of an `exec` command: reserved lines on its stdout.
//!
//! ```text
//! ::progress <percent>[%] [<message>]
//! ```
//!
//! - the line starts with `::progress` (no leading space), then at least one
//!   space or tab;
//! - `<percent>` is a whole number from 0 to 100, optionally followed by `%`;
//! - the rest of the line, trimmed, is the message (may be empty; cut to
//!   [`MAX_PROGRESS_MESSAGE`](stevedore_core::progress::MAX_PROGRESS_MESSAGE)
//!   bytes).
//!
//! A well-formed line is a report and is **not** logged. Anything else —
//! including `::progress` with a missing, fractional or out-of-range number,
//! or a reserved line on stderr — is an ordinary log line, so a typo shows
//! up in the log rather than vanishing. A line survives `ssh`, `sudo` and
//! other wrappers that pass stdout through (a trailing `\r` is dropped with
//! the line ending).

use stevedore_core::progress::Progress;

/// The keyword a reserved line starts with.
pub const PREFIX: &str = "::progress";

/// The report a stdout line makes, or `None` for an ordinary line.
pub fn parse(line: &str) -> Option<Progress> {
    let rest = line.strip_prefix(PREFIX)?;
    // The keyword must be followed by blank space: `::progressive` is text.
    if !rest.starts_with([' ', '\t']) {
        return None;
    }
    let rest = rest.trim_start_matches([' ', '\t']);
    let end = rest.find([' ', '\t']).unwrap_or(rest.len());
    let (number, message) = rest.split_at(end);
    let digits = number.strip_suffix('%').unwrap_or(number);
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let percent: u8 = digits.parse().ok()?;
    Progress::new(percent, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(line: &str) -> Option<(u8, String)> {
        parse(line).map(|p| (p.percent, p.message))
    }

    #[test]
    fn well_formed_lines_are_reports() {
        assert_eq!(
            report("::progress 42 Copying layers"),
            Some((42, "Copying layers".into()))
        );
        assert_eq!(
            report("::progress 42% Copying layers"),
            Some((42, "Copying layers".into()))
        );
        assert_eq!(report("::progress 0"), Some((0, String::new())));
        assert_eq!(report("::progress\t100\t done  "), Some((100, "done".into())));
        assert_eq!(report("::progress   007   x"), Some((7, "x".into())));
        assert_eq!(
            report("::progress 5 50% of 10 files"),
            Some((5, "50% of 10 files".into()))
        );
    }

    #[test]
    fn anything_else_is_an_ordinary_line() {
        for line in [
            "",
            "progress 42",
            " ::progress 42",
            "::progress",
            "::progress ",
            "::progressive 42",
            "::progress42",
            "::progress 101",
            "::progress 1000",
            "::progress -1",
            "::progress 42.5 half",
            "::progress forty-two",
            "::progress %",
            "::progress 4x2",
            "::PROGRESS 42",
        ] {
            assert_eq!(report(line), None, "{line:?}");
        }
    }

    #[test]
    fn long_messages_are_cut() {
        let line = format!("::progress 1 {}", "x".repeat(1000));
        let (_, message) = report(&line).unwrap();
        assert_eq!(message.len(), stevedore_core::progress::MAX_PROGRESS_MESSAGE);
    }
}
