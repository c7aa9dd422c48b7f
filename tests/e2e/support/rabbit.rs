//! RabbitMQ as its operator sees it (`rabbitmqctl`): closing one
//! deployment's connections, as a broker restart would.

use tokio::process::Command;

/// Closes the broker connections of this deployment's processes whose name
/// ends in `-<role>` (`consume`, `publish`), as a RabbitMQ restart would.
pub async fn close_amqp_connections(prefix: &str, role: &str) -> usize {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "-q",
            "--no-table-headers",
            "pid",
            "client_properties",
        ])
        .output()
        .await
        .expect("rabbitmqctl must be installed for this test");
    let listing = String::from_utf8_lossy(&out.stdout).into_owned();
    let name = format!("\"{prefix}-{role}\"");
    let pids: Vec<String> = listing
        .lines()
        .filter(|l| l.contains(&name))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect();
    for pid in &pids {
        let _ = Command::new("rabbitmqctl")
            .args(["close_connection", pid, "test"])
            .output()
            .await;
    }
    pids.len()
}

/// Closes, from the RabbitMQ side, the connections whose name starts with
/// `<prefix>-` and ends with one of `roles` (`publish`, `consume`): only this
/// deployment's, never other tests'. Returns how many were closed.
pub async fn close_rabbit_connections(prefix: &str, roles: &[&str]) -> usize {
    let out = Command::new("rabbitmqctl")
        .args([
            "list_connections",
            "pid",
            "client_properties",
            "-q",
            "--no-table-headers",
        ])
        .output()
        .await
        .expect("rabbitmqctl list_connections");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut closed = 0;
    for line in text.lines() {
        let Some((pid, props)) = line.split_once('\t') else {
            continue;
        };
        let wanted = roles
            .iter()
            .any(|r| props.contains(&format!("{{\"connection_name\",\"{prefix}-{r}\"}}")));
        if wanted {
            let st = Command::new("rabbitmqctl")
                .args(["close_connection", pid.trim(), "fault test"])
                .output()
                .await
                .expect("rabbitmqctl close_connection");
            if st.status.success() {
                closed += 1;
            }
        }
    }
    closed
}
