//! Terminal output: colours (only on a terminal, never with `NO_COLOR`),
//! relative times, plain tables and a spinner with a progress bar.

use chrono::{DateTime, Utc};
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Writes a line to stdout. A closed stdout (`stevedore action ls | head`)
/// ends the process quietly instead of panicking.
pub fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// Whether stdout is a terminal that wants colours.
pub fn stdout_colors() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Whether stderr is a terminal that wants colours.
pub fn stderr_colors() -> bool {
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// ANSI colours used by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Color {
    Red,
    Green,
    Yellow,
    Cyan,
    Bold,
}

/// `text` in `color` when `enabled`, else unchanged.
pub fn paint(text: &str, color: Color, enabled: bool) -> String {
    if !enabled {
        return text.to_string();
    }
    let code = match color {
        Color::Red => "31",
        Color::Green => "32",
        Color::Yellow => "33",
        Color::Cyan => "36",
        Color::Bold => "1",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

/// The colour of an action state.
pub fn state_color(state: &str) -> Color {
    match state {
        "Success" => Color::Green,
        "Failed" => Color::Red,
        "Canceled" | "Canceling" => Color::Yellow,
        _ => Color::Cyan,
    }
}

/// Parses an RFC 2822 date as the API sends it (`Wed, 17 Sep 2014 08:26:22 +0000`).
pub fn parse_date(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc2822(s.trim())
        .ok()
        .map(|d| d.with_timezone(&Utc))
}

/// "2 minutes ago", "an hour ago", "in 5 seconds": `then` relative to `now`,
/// in the words the original clients print.
pub fn humanize(then: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds();
    let future = secs < 0;
    let s = secs.unsigned_abs();
    let phrase = if s < 1 {
        return "now".into();
    } else if s < 60 {
        unit(s, "a second", "seconds")
    } else if s < 3600 {
        unit(s / 60, "a minute", "minutes")
    } else if s < 86_400 {
        unit(s / 3600, "an hour", "hours")
    } else if s < 30 * 86_400 {
        unit(s / 86_400, "a day", "days")
    } else if s < 365 * 86_400 {
        unit(s / (30 * 86_400), "a month", "months")
    } else {
        unit(s / (365 * 86_400), "a year", "years")
    };
    if future {
        format!("in {phrase}")
    } else {
        format!("{phrase} ago")
    }
}

fn unit(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        one.to_string()
    } else {
        format!("{n} {many}")
    }
}

/// A relative date for a table cell: "" for null or empty, the raw text if
/// it does not parse.
pub fn relative_cell(value: Option<&str>, now: DateTime<Utc>) -> String {
    match value {
        None | Some("") => String::new(),
        Some(s) => parse_date(s)
            .map(|d| humanize(d, now))
            .unwrap_or_else(|| s.to_string()),
    }
}

/// A table cell: its text and an optional colour.
pub struct Cell {
    pub text: String,
    pub color: Option<Color>,
}

impl Cell {
    /// A cell without colour.
    pub fn plain(text: impl Into<String>) -> Cell {
        Cell {
            text: text.into(),
            color: None,
        }
    }

    /// A coloured cell.
    pub fn colored(text: impl Into<String>, color: Color) -> Cell {
        Cell {
            text: text.into(),
            color: Some(color),
        }
    }
}

/// Renders a plain table (columns two spaces apart, like `tabulate`'s
/// "plain" format); colours do not count toward column widths.
pub fn table(headers: &[&str], rows: &[Vec<Cell>], colors: bool) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, c) in row.iter().enumerate() {
            widths[i] = widths[i].max(c.text.chars().count());
        }
    }
    let mut out = String::new();
    let last = headers.len() - 1;
    let header: Vec<String> = headers
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let padded = if i == last {
                h.to_string()
            } else {
                pad(h, widths[i])
            };
            paint(&padded, Color::Bold, colors)
        })
        .collect();
    out.push_str(header.join("  ").trim_end());
    out.push('\n');
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let padded = if i == last {
                    c.text.clone()
                } else {
                    pad(&c.text, widths[i])
                };
                match c.color {
                    Some(color) if colors => {
                        // Colour the text, not the padding.
                        let fill = padded.len() - c.text.len();
                        format!("{}{}", paint(&c.text, color, true), " ".repeat(fill))
                    }
                    _ => padded,
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn pad(s: &str, width: usize) -> String {
    let n = s.chars().count();
    format!("{s}{}", " ".repeat(width.saturating_sub(n)))
}

/// A one-line spinner on stderr, shown only when stderr is a terminal, with
/// an action's progress bar once it reports progress. Output printed through
/// [`Spinner::println`] clears the spinner line first. Without a terminal,
/// each new progress report is a plain line on stderr instead
/// ([`progress_line`]).
#[derive(Clone)]
pub struct Spinner {
    inner: Option<Arc<Mutex<SpinnerState>>>,
    /// The last report printed as a plain line (no terminal).
    printed: Arc<Mutex<Option<(u8, String)>>>,
}

struct SpinnerState {
    message: String,
    progress: Option<(u8, String)>,
    frame: usize,
    done: bool,
}

/// Cells of the progress bar.
const BAR_WIDTH: usize = 20;
/// Characters of a progress message shown next to the bar (the rest is cut,
/// so the status line does not wrap on a narrow terminal).
const BAR_MESSAGE_CHARS: usize = 40;

/// The progress bar of the status line: `[██████░░…] 42% Copying layers`.
pub fn progress_bar(percent: u8, message: &str) -> String {
    let percent = percent.min(100) as usize;
    let filled = percent * BAR_WIDTH / 100;
    let mut text: String = message.chars().take(BAR_MESSAGE_CHARS).collect();
    if message.chars().count() > BAR_MESSAGE_CHARS {
        text.push('…');
    }
    format!(
        "[{}{}] {percent:>3}% {text}",
        "█".repeat(filled),
        "░".repeat(BAR_WIDTH - filled)
    )
    .trim_end()
    .to_string()
}

/// A progress report as a plain line (no terminal): `progress 42% Copying layers`.
pub fn progress_line(percent: u8, message: &str) -> String {
    format!("progress {}% {message}", percent.min(100))
        .trim_end()
        .to_string()
}

const FRAMES: &[&str] = &["⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"];

impl Spinner {
    /// Starts a spinner with `message` (a no-op when stderr is not a terminal).
    pub fn start(message: &str) -> Spinner {
        if !std::io::stderr().is_terminal() {
            return Spinner::none();
        }
        let state = Arc::new(Mutex::new(SpinnerState {
            message: message.to_string(),
            progress: None,
            frame: 0,
            done: false,
        }));
        let ticker = state.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let mut s = ticker.lock().unwrap();
                if s.done {
                    return;
                }
                s.frame = (s.frame + 1) % FRAMES.len();
                let bar = s
                    .progress
                    .as_ref()
                    .map(|(p, m)| format!(" {}", progress_bar(*p, m)))
                    .unwrap_or_default();
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{} {}{bar}", FRAMES[s.frame], s.message);
                let _ = err.flush();
            }
        });
        Spinner {
            inner: Some(state),
            printed: Arc::default(),
        }
    }

    /// No spinner: lines go straight to stdout.
    pub fn none() -> Spinner {
        Spinner {
            inner: None,
            printed: Arc::default(),
        }
    }

    /// Shows an action's progress: on a terminal as a bar on the spinner
    /// line, else as a plain line on stderr when it differs from the last.
    pub fn set_progress(&self, percent: u8, message: &str) {
        let report = (percent.min(100), message.to_string());
        match &self.inner {
            Some(s) => s.lock().unwrap().progress = Some(report),
            None => {
                let mut last = self.printed.lock().unwrap();
                if last.as_ref() != Some(&report) {
                    let mut err = std::io::stderr().lock();
                    let _ = writeln!(err, "{}", progress_line(report.0, &report.1));
                    let _ = err.flush();
                    *last = Some(report);
                }
            }
        }
    }

    /// Replaces the spinner's message.
    pub fn set_message(&self, message: &str) {
        if let Some(s) = &self.inner {
            s.lock().unwrap().message = message.to_string();
        }
    }

    /// Prints a line to stdout without mangling the spinner line.
    pub fn println(&self, line: &str) {
        let guard = self.inner.as_ref().map(|s| s.lock().unwrap());
        if guard.as_ref().is_some_and(|g| !g.done) {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
        say(line);
    }

    /// Prints a line to stderr without mangling the spinner line.
    pub fn println_err(&self, line: &str) {
        let guard = self.inner.as_ref().map(|s| s.lock().unwrap());
        let mut err = std::io::stderr().lock();
        if guard.as_ref().is_some_and(|g| !g.done) {
            let _ = write!(err, "\r\x1b[2K");
        }
        let _ = writeln!(err, "{line}");
        let _ = err.flush();
    }

    /// Stops the spinner and clears its line.
    pub fn finish(&self) {
        if let Some(s) = &self.inner {
            let mut g = s.lock().unwrap();
            if !g.done {
                g.done = true;
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K");
                let _ = err.flush();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn humanize_speaks_like_the_original_clients() {
        let now = Utc.with_ymd_and_hms(2026, 1, 10, 12, 0, 0).unwrap();
        let ago = |s: i64| humanize(now - chrono::Duration::seconds(s), now);
        assert_eq!(ago(0), "now");
        assert_eq!(ago(1), "a second ago");
        assert_eq!(ago(42), "42 seconds ago");
        assert_eq!(ago(60), "a minute ago");
        assert_eq!(ago(150), "2 minutes ago");
        assert_eq!(ago(3600), "an hour ago");
        assert_eq!(ago(5 * 3600), "5 hours ago");
        assert_eq!(ago(86_400), "a day ago");
        assert_eq!(ago(3 * 86_400), "3 days ago");
        assert_eq!(ago(65 * 86_400), "2 months ago");
        assert_eq!(ago(800 * 86_400), "2 years ago");
        assert_eq!(ago(-30), "in 30 seconds");
    }

    #[test]
    fn relative_cells_accept_null_empty_and_unparsable_dates() {
        let now = Utc.with_ymd_and_hms(2014, 9, 17, 8, 28, 22).unwrap();
        assert_eq!(relative_cell(None, now), "");
        assert_eq!(relative_cell(Some(""), now), "");
        assert_eq!(
            relative_cell(Some("Wed, 17 Sep 2014 08:26:22 +0000"), now),
            "2 minutes ago"
        );
        assert_eq!(relative_cell(Some("yesterday"), now), "yesterday");
    }

    #[test]
    fn progress_shows_as_a_bar_or_a_plain_line() {
        assert_eq!(progress_bar(0, ""), format!("[{}]   0%", "░".repeat(20)));
        assert_eq!(
            progress_bar(42, "Copying layers"),
            format!("[{}{}]  42% Copying layers", "█".repeat(8), "░".repeat(12))
        );
        assert_eq!(
            progress_bar(100, "done"),
            format!("[{}] 100% done", "█".repeat(20))
        );
        let long = progress_bar(5, &"x".repeat(100));
        assert!(long.ends_with(&format!("{}…", "x".repeat(40))), "{long}");
        assert_eq!(progress_line(42, "Copying layers"), "progress 42% Copying layers");
        assert_eq!(progress_line(7, ""), "progress 7%");
    }

    #[test]
    fn tables_align_on_text_not_colour_codes() {
        let rows = vec![
            vec![
                Cell::plain("a"),
                Cell::colored("Success", Color::Green),
                Cell::plain("x"),
            ],
            vec![
                Cell::plain("bbbb"),
                Cell::colored("Failed", Color::Red),
                Cell::plain(""),
            ],
        ];
        let plain = table(&["K", "STATE", "LAST"], &rows, false);
        assert_eq!(plain, "K     STATE    LAST\na     Success  x\nbbbb  Failed\n");
        let colored = table(&["K", "STATE", "LAST"], &rows, true);
        assert!(colored.contains("\x1b[32mSuccess\x1b[0m  x"), "{colored:?}");
        assert!(colored.contains("\x1b[31mFailed\x1b[0m\n"), "{colored:?}");
    }
}
