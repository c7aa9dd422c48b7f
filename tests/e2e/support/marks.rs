//! The `mark` operation of the fault tests, and the check that no action ever
//! ran twice at once.

/// A config for fault tests: leases long enough to ride out a short database
/// outage, a short shutdown deadline, and a `mark` operation whose command
/// appends `start <uuid>` and `end <uuid>` lines to `marks` (so a test can see
/// whether two runs of one action ever overlapped; it takes about 200 ms).
pub fn fault_config(marks: &std::path::Path) -> String {
    let marks = marks.display();
    format!(
        r#"
[relay]
redispatch_after = "15s"

[worker]
concurrency = 8
lease = "8s"
heartbeat = "1s"
kill_grace = "1s"
shutdown_deadline = "2s"

[[operation]]
object = "service"
verb = "mark"
exec = ["sh", "-c", "trap 'echo \"end $STEVEDORE_ACTION_UUID\" >> {marks}; exit 143' TERM; echo \"start $STEVEDORE_ACTION_UUID\" >> {marks}; sleep 0.2; echo \"end $STEVEDORE_ACTION_UUID\" >> {marks}; echo marked"]

[[operation]]
object = "service"
verb = "noop"
handler = "noop"

[[operation]]
object = "service"
verb = "sleep"
handler = "sleep"
"#
    )
}

/// Checks a marks file written by the `mark` operation: no action ever
/// started while a run of it was still going. Returns how many runs each
/// action had.
pub fn check_marks(marks: &std::path::Path) -> std::collections::HashMap<String, usize> {
    let text = std::fs::read_to_string(marks).unwrap_or_default();
    let mut open: std::collections::HashMap<String, bool> = Default::default();
    let mut runs: std::collections::HashMap<String, usize> = Default::default();
    for (n, line) in text.lines().enumerate() {
        let Some((what, uuid)) = line.split_once(' ') else {
            panic!("marks line {n}: {line:?}");
        };
        let running = open.entry(uuid.to_string()).or_default();
        match what {
            "start" => {
                assert!(!*running, "action {uuid} started twice at once (marks line {n})");
                *running = true;
                *runs.entry(uuid.to_string()).or_default() += 1;
            }
            "end" => *running = false,
            _ => panic!("marks line {n}: {line:?}"),
        }
    }
    runs
}
