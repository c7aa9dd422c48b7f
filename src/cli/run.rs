//! `stevedore run <type> <uuid> <verb>`: submits an operation on an object.

use super::actions::follow;
use super::config::ConnArgs;
use super::http::Api;
use super::output::Spinner;
use super::Exit;
use anyhow::{bail, Context, Result};
use clap::Args;
use serde_json::Value;

/// `stevedore run` options.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Object type: stack, service, container, nodecluster, node, or a type
    /// declared in stevedore.toml (then pass --subsystem).
    pub object_type: String,
    /// The object's uuid.
    pub uuid: String,
    /// The operation's verb, e.g. start.
    pub verb: String,
    /// Operation parameters as JSON, e.g. '{"seconds": 5}'.
    #[arg(long)]
    pub body: Option<String>,
    /// API subsystem of the type [default: app for stack, service and
    /// container; infra for nodecluster and node].
    #[arg(long)]
    pub subsystem: Option<String>,
    /// Follow the action's logs until it ends and exit with its final state:
    /// 0 Success, 1 Failed, 2 Canceled.
    #[arg(short, long)]
    pub wait: bool,
}

/// The API subsystem a built-in object type lives in.
pub fn subsystem_of(object_type: &str) -> Option<&'static str> {
    match object_type {
        "stack" | "service" | "container" => Some("app"),
        "nodecluster" | "node" => Some("infra"),
        _ => None,
    }
}

fn path_segment(what: &str, s: &str) -> Result<String> {
    let s = s.trim();
    if s.is_empty()
        || !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        bail!("{what} {s:?} may only contain letters, digits, '-' and '_'");
    }
    Ok(s.to_string())
}

/// `POST /api/<subsystem>/v1/<type>/<uuid>/<verb>/`.
pub fn operation_path(object_type: &str, uuid: &str, verb: &str, subsystem: Option<&str>) -> Result<String> {
    let t = path_segment("object type", &object_type.to_ascii_lowercase())?;
    let sub = match subsystem {
        Some(s) => path_segment("subsystem", s)?,
        None => match subsystem_of(&t) {
            Some(s) => s.to_string(),
            None => bail!("unknown object type '{t}': pass --subsystem (app or infra)"),
        },
    };
    let uuid = path_segment("uuid", uuid)?;
    let verb = path_segment("verb", verb)?;
    Ok(format!("/api/{sub}/v1/{t}/{uuid}/{verb}/"))
}

/// Runs `stevedore run`.
pub async fn run(a: RunArgs) -> Result<()> {
    let path = operation_path(&a.object_type, &a.uuid, &a.verb, a.subsystem.as_deref())?;
    let body = match &a.body {
        Some(b) => {
            let v: Value = serde_json::from_str(b).context("--body is not valid JSON")?;
            Some(v.to_string())
        }
        None => None,
    };
    let api = Api::new(&a.conn.resolve()?)?;
    let reply = api.post(&path, body).await?;
    let uuid = reply
        .json
        .get("uuid")
        .and_then(Value::as_str)
        .map(String::from)
        .or_else(|| {
            // The action URI header, for servers that answer with the object.
            reply
                .headers
                .get("X-DockerCloud-Action-URI")
                .and_then(|h| h.to_str().ok())
                .and_then(|u| u.trim_end_matches('/').rsplit('/').next())
                .map(String::from)
        });
    let Some(uuid) = uuid else {
        bail!("the server accepted the operation but named no action");
    };
    super::output::say(&uuid);
    if !a.wait {
        return Ok(());
    }
    let name = reply.json["action"].as_str().unwrap_or("action").to_string();
    let spinner = Spinner::start(&format!("{name} {}", &uuid[..uuid.len().min(8)]));
    let code = follow(&api, &uuid, None, &spinner).await;
    spinner.finish();
    match code? {
        0 => Ok(()),
        c => Err(Exit(c).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_paths_use_the_types_subsystem() {
        assert_eq!(
            operation_path("service", "abc-1", "start", None).unwrap(),
            "/api/app/v1/service/abc-1/start/"
        );
        assert_eq!(
            operation_path("Node", "abc", "upgrade", None).unwrap(),
            "/api/infra/v1/node/abc/upgrade/"
        );
        assert_eq!(
            operation_path("database", "abc", "backup", Some("app")).unwrap(),
            "/api/app/v1/database/abc/backup/"
        );
        let e = operation_path("database", "abc", "backup", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("pass --subsystem"), "{e}");
        assert!(operation_path("service", "../x", "start", None).is_err());
        assert!(operation_path("service", "abc", "start?x=1", None).is_err());
    }
}
