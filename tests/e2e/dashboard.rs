//! The web dashboard in a real browser: headless Chromium driven over
//! WebDriver (chromedriver), against the real binary on both backends. Logs
//! in with the keyboard, creates a service, runs an operation and watches it
//! reach Success live, reads its logs, cancels a long one, filters, pages
//! through 10,000 actions, and checks a phone-width layout with a very long
//! log line. The embedded run saves a screenshot of each main page into
//! `docs/screenshots/`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`bash .ci/run` installs
//! them); `STEVEDORE_CHROMEDRIVER` / `STEVEDORE_CHROMIUM` point elsewhere.

use crate::support::deployment::{Backend, Deployment, TEST_CONFIG};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use stevedore_core::action::NewAction;
use stevedore_core::state::ActionState;
use uuid::Uuid;

/// The test operations plus a long one to cancel and one that prints a
/// 20,000-character line.
fn config() -> String {
    format!(
        r#"{TEST_CONFIG}
[[operation]]
object = "service"
verb = "deploy"
exec = ["sh", "-c", "for i in $(seq 1 600); do echo \"step $i\"; sleep 0.1; done"]

[[operation]]
object = "service"
verb = "spew"
exec = ["sh", "-c", "head -c 20000 /dev/zero | tr '\\0' x; echo; echo done"]
"#
    )
}

/// How long the browser waits for a condition (`STEVEDORE_BROWSER_WAIT`
/// seconds, default 60: a loaded CI machine is slow, a failure still ends).
fn wait() -> Duration {
    let secs = std::env::var("STEVEDORE_BROWSER_WAIT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    Duration::from_secs(secs)
}

/// The two runs share two cores: one browser at a time.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: tokio::process::Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Driver {
    async fn start() -> Driver {
        let exe = std::env::var("STEVEDORE_CHROMEDRIVER").unwrap_or_else(|_| "/usr/bin/chromedriver".into());
        assert!(
            Path::new(&exe).exists(),
            "{exe} not found: the browser test needs Debian's chromium and chromium-driver \
             (bash .ci/run installs them), or STEVEDORE_CHROMEDRIVER"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group, so dropping the driver also ends the
        // browser it started, even when the test panicked mid-session.
        let child = tokio::process::Command::new(exe)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("spawn chromedriver");
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Driver {
            child,
            port,
            _profile: tempfile::tempdir().unwrap(),
        }
    }

    async fn browser(&self) -> Client {
        let chromium = std::env::var("STEVEDORE_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let profile = format!("--user-data-dir={}", self._profile.path().display());
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,900", profile,
                ],
            },
        });
        let caps = caps.as_object().unwrap().clone();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("WebDriver session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The driver leads its own group (process_group(0) above): signal
        // that group, never a pid taken from elsewhere.
        if let Some(pid) = self.child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
            if pid > 1 {
                // SAFETY: killpg only sends a signal; the group is the driver's own.
                unsafe { libc::killpg(pid, libc::SIGKILL) };
            }
        }
        let _ = self.child.start_kill();
    }
}

/// Polls a JavaScript expression until it is truthy; panics with `what`
/// and the page's text otherwise.
async fn until(c: &Client, what: &str, expr: &str) -> Value {
    let script = format!("return ({expr}) || null;");
    let deadline = tokio::time::Instant::now() + wait();
    loop {
        if let Ok(v) = c.execute(&script, vec![]).await {
            if !v.is_null() && v != json!(false) {
                return v;
            }
        }
        if tokio::time::Instant::now() > deadline {
            let text = c
                .execute("return document.body.innerText", vec![])
                .await
                .unwrap_or_default();
            let text: String = text.as_str().unwrap_or_default().chars().take(3000).collect();
            panic!("timed out waiting for {what}; the page says:\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.expect("script")
}

async fn click(c: &Client, css: &str) {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap_or_else(|e| panic!("click {css}: {e}"));
}

/// Follows a link by its exact text (within `scope`, a CSS selector).
async fn follow(c: &Client, scope: &str, text: &str) {
    let expr =
        format!("[...document.querySelectorAll({scope:?} + ' a')].find(a => a.textContent === {text:?})");
    until(c, &format!("a link {text:?}"), &expr).await;
    js(c, &format!("{expr}.click(); return true;")).await;
}

async fn screenshot(c: &Client, save: Option<&Path>, name: &str) {
    if let Some(dir) = save {
        let png = c.screenshot().await.expect("screenshot");
        if let Err(e) = std::fs::write(dir.join(format!("{name}.png")), png) {
            eprintln!("screenshot {name} not saved: {e}");
        }
    }
}

/// Waits for the state badge in the page title.
async fn title_state(c: &Client, state: &str) {
    until(
        c,
        &format!("the action to show {state}"),
        &format!("document.querySelector('h1 .state')?.dataset.state === {state:?}"),
    )
    .await;
}

/// Whether the page scrolls sideways (it must not: wide content scrolls in its own box).
async fn page_overflows(c: &Client) -> bool {
    js(
        c,
        "return document.documentElement.scrollWidth > window.innerWidth + 1",
    )
    .await
    .as_bool()
    .unwrap()
}

/// Records `n` finished actions on one object straight into the store.
async fn seed_actions(d: &Deployment, n: usize) {
    let store = d.store().await;
    let namespace = d.user.clone();
    let object = Uuid::new_v4();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<NewAction> = chunk
            .iter()
            .map(|_| NewAction {
                uuid: Uuid::new_v4(),
                namespace: namespace.clone(),
                action: "Service Stop".into(),
                object: format!("/api/app/v1/{namespace}/service/{object}/"),
                object_uuid: object,
                object_type: "service".into(),
                object_parents: vec![],
                verb: "stop".into(),
                method: "POST".into(),
                path: format!("/api/app/v1/service/{object}/stop/"),
                body: String::new(),
                ip: "127.0.0.1".into(),
                location: String::new(),
                user: namespace.clone(),
                user_agent: "seed".into(),
                is_user_action: true,
                retry_of: None,
                completed: Some(ActionState::Success),
            })
            .collect();
        store.submit_actions(&batch).await.expect("seed");
    }
}

async fn dashboard_end_to_end(backend: Backend) {
    let _one = ONE_BROWSER.lock().await;
    let mut d = Deployment::start_with(backend, &config()).await;
    let base = d.dashboard_url().await;
    let save: Option<PathBuf> = (backend == Backend::Embedded).then(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    let save = save.as_deref();
    let driver = Driver::start().await;
    let c = driver.browser().await;

    // --- log in: a wrong key is refused; then the keyboard alone gets in.
    c.goto(&format!("{base}/")).await.unwrap();
    until(&c, "the login form", "!document.getElementById('login').hidden").await;
    screenshot(&c, save, "login").await;
    let user = c.find(Locator::Id("login-user")).await.unwrap();
    user.send_keys(&d.user).await.unwrap();
    c.find(Locator::Id("login-key"))
        .await
        .unwrap()
        .send_keys("not-the-key\u{E007}")
        .await
        .unwrap();
    until(
        &c,
        "the wrong-key message",
        "document.getElementById('login-error').textContent.includes('Wrong')",
    )
    .await;
    let key_field = c.find(Locator::Id("login-key")).await.unwrap();
    key_field.clear().await.unwrap();
    user.click().await.unwrap();
    // Tab from the user field to the key field, type it, Enter submits.
    user.send_keys("\u{E004}").await.unwrap();
    assert_eq!(
        js(&c, "return document.activeElement.id").await,
        "login-key",
        "Tab moves from user to key"
    );
    key_field.send_keys(&format!("{}\u{E007}", d.key)).await.unwrap();
    until(
        &c,
        "the dashboard header",
        "!document.getElementById('top').hidden",
    )
    .await;
    until(
        &c,
        "the events stream",
        "document.getElementById('live').classList.contains('on')",
    )
    .await;
    let cookie = js(&c, "return document.cookie").await;
    assert!(
        !cookie.as_str().unwrap().contains("stevedore_session"),
        "the session cookie is HttpOnly: {cookie}"
    );

    // The skip link moves focus to the content and leaves the page where it is.
    until(
        &c,
        "the actions page",
        "document.querySelector('#page h1')?.textContent === 'Actions'",
    )
    .await;
    js(&c, "document.querySelector('.skip').click(); return true;").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        js(&c, "return document.querySelector('#page h1')?.textContent").await,
        "Actions",
        "the skip link is not a route"
    );

    // --- objects: create a service from the page.
    follow(&c, "#nav", "Services").await;
    until(&c, "the create form", "document.getElementById('new-name')").await;
    c.find(Locator::Id("new-name"))
        .await
        .unwrap()
        .send_keys("web\u{E007}")
        .await
        .unwrap();
    until(
        &c,
        "the new service's row",
        "[...document.querySelectorAll('#page table a')].some(a => a.textContent === 'web')",
    )
    .await;
    screenshot(&c, save, "objects").await;
    follow(&c, "#page table", "web").await;
    until(
        &c,
        "the operation buttons",
        "document.querySelector('button[data-verb=start]')",
    )
    .await;

    // --- run an operation; it appears and reaches Success without a reload.
    js(&c, "window.__stillHere = true; return true;").await;
    click(&c, "button[data-verb=start]").await;
    let row = "[...document.querySelectorAll('#page tbody tr')].find(tr => tr.textContent.includes('Service Start'))";
    until(&c, "the new action's row", row).await;
    until(
        &c,
        "the action to reach Success live",
        &format!("{row}?.querySelector('.state')?.dataset.state === 'Success'"),
    )
    .await;
    assert_eq!(
        js(&c, "return window.__stillHere === true").await,
        true,
        "no reload"
    );
    screenshot(&c, save, "object").await;

    // --- its page: every field, its logs, Retry allowed and Cancel not.
    follow(&c, "#page table", "Service Start").await;
    title_state(&c, "Success").await;
    until(
        &c,
        "the log lines",
        "document.getElementById('logs').textContent.includes('started')",
    )
    .await;
    until(
        &c,
        "the log stream to end",
        "document.getElementById('log-state').textContent === 'ended'",
    )
    .await;
    for field in ["uuid", "state", "start_date", "end_date", "object", "user", "ip"] {
        let has = js(
            &c,
            &format!("return [...document.querySelectorAll('dl.fields dt')].some(dt => dt.textContent === {field:?})"),
        )
        .await;
        assert_eq!(has, true, "field {field} shown");
    }
    assert_eq!(
        js(&c, "return document.getElementById('cancel').disabled").await,
        true
    );
    assert_eq!(
        js(&c, "return document.getElementById('retry').disabled").await,
        false
    );
    screenshot(&c, save, "action").await;

    // --- a long one: follow its logs live, cancel it.
    c.back().await.unwrap();
    until(
        &c,
        "the operation buttons",
        "document.querySelector('button[data-verb=deploy]')",
    )
    .await;
    click(&c, "button[data-verb=deploy]").await;
    follow(&c, "#page table", "Service Deploy").await;
    title_state(&c, "In progress").await;
    until(
        &c,
        "live log lines",
        "document.getElementById('logs').textContent.includes('step 3')",
    )
    .await;
    assert_eq!(
        js(&c, "return document.getElementById('retry').disabled").await,
        true
    );
    click(&c, "#cancel").await;
    title_state(&c, "Canceled").await;
    assert_eq!(
        js(&c, "return document.getElementById('cancel').disabled").await,
        true
    );
    assert_eq!(
        js(&c, "return document.getElementById('retry').disabled").await,
        false
    );

    // Retry makes a new action and opens it.
    let old = js(&c, "return location.hash").await;
    click(&c, "#retry").await;
    until(
        &c,
        "the retried action's page",
        &format!(
            "location.hash !== {old} && location.hash.startsWith('#/action/') && \
             document.querySelector('#page h1')?.dataset.uuid === location.hash.split('/')[2] && \
             !document.getElementById('cancel').disabled"
        ),
    )
    .await;
    let retried = js(&c, "return location.hash.split('/')[2]").await;
    click(&c, "#cancel").await;
    title_state(&c, "Canceled").await;
    let (_, _, a) = d
        .request(
            reqwest::Method::GET,
            &format!("/api/audit/v1/action/{}/", retried.as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(a["state"], "Canceled", "{a}");

    // --- the actions page: 10,000 more actions, filters, paging.
    seed_actions(&d, 10_000).await;
    c.goto(&format!("{base}/#/actions")).await.unwrap();
    until(&c, "the actions table", "document.querySelector('#page table')").await;
    let pager = until(
        &c,
        "the total in the pager",
        "[...document.querySelectorAll('.pager span')].map(s => s.textContent).find(t => /of 1\\d{4}$/.test(t))",
    )
    .await;
    assert!(pager.as_str().unwrap().starts_with("1–25 of "), "{pager}");
    assert_eq!(
        js(&c, "return document.querySelectorAll('#page tbody tr').length").await,
        25
    );
    screenshot(&c, save, "actions").await;
    follow(&c, ".pager", "Older →").await;
    until(
        &c,
        "the second page",
        "[...document.querySelectorAll('.pager span')].some(s => s.textContent.startsWith('26–50 of'))",
    )
    .await;
    assert!(!page_overflows(&c).await, "10,000 actions do not widen the page");
    // Filter by state with the form.
    c.goto(&format!("{base}/#/actions")).await.unwrap();
    until(&c, "the filter form", "document.getElementById('f-state')").await;
    js(&c, "document.getElementById('f-state').value = 'Canceled'; document.querySelector('form.filters button[type=submit]').click(); return true;").await;
    until(
        &c,
        "only Canceled actions",
        "location.hash.includes('state=Canceled') && document.querySelectorAll('#page tbody tr').length === 2 && \
         [...document.querySelectorAll('#page tbody .state')].every(s => s.dataset.state === 'Canceled')",
    )
    .await;
    // A date range in the future matches nothing; the object type filter narrows.
    js(&c, "document.getElementById('f-from').value = '2099-01-01T00:00'; document.querySelector('form.filters button[type=submit]').click(); return true;").await;
    until(
        &c,
        "an empty date window",
        "location.hash.includes('from=2099') && document.querySelector('#page .empty')",
    )
    .await;
    c.goto(&format!("{base}/#/actions?object_type=node"))
        .await
        .unwrap();
    until(
        &c,
        "no node actions",
        "document.getElementById('f-type')?.value === 'node' && document.querySelector('#page .empty')",
    )
    .await;
    c.goto(&format!("{base}/#/actions?object_type=service&state=Success"))
        .await
        .unwrap();
    until(
        &c,
        "service actions",
        "document.getElementById('f-type')?.value === 'service' && \
         document.querySelectorAll('#page tbody tr').length === 25",
    )
    .await;
    // The header counts by state.
    until(
        &c,
        "the Canceled count",
        "[...document.querySelectorAll('#counts .count')].some(a => a.textContent === 'Canceled: 2')",
    )
    .await;

    // --- a phone: no sideways scrolling, even with a 20,000-character log line.
    let svc = d
        .create_object("/api/app/v1/service/", r#"{"name":"wide"}"#)
        .await;
    let (_, _, a) = d
        .request(
            reqwest::Method::POST,
            &format!("/api/app/v1/service/{}/spew/", svc["uuid"].as_str().unwrap()),
            None,
        )
        .await;
    let spew = a["uuid"].as_str().unwrap().to_string();
    d.wait_for_state(&spew, &["Success"]).await;
    c.set_window_size(390, 844).await.unwrap();
    assert!(
        js(&c, "return window.innerWidth").await.as_u64().unwrap() <= 400,
        "the phone checks run at phone width"
    );
    c.goto(&format!("{base}/#/action/{spew}")).await.unwrap();
    until(
        &c,
        "the long line",
        "document.getElementById('logs').textContent.includes('xxxxxxxxxxxxxxxxxxxx')",
    )
    .await;
    assert!(
        !page_overflows(&c).await,
        "a long log line wraps inside the log box"
    );
    screenshot(&c, save, "phone-action").await;
    c.goto(&format!("{base}/#/actions")).await.unwrap();
    until(&c, "the actions table", "document.querySelector('#page table')").await;
    assert!(!page_overflows(&c).await, "the actions table fits a phone");

    // --- log out: the session is gone.
    click(&c, "#logout").await;
    until(&c, "the login form", "!document.getElementById('login').hidden").await;
    c.refresh().await.unwrap();
    until(
        &c,
        "the login form after a reload",
        "!document.getElementById('login').hidden",
    )
    .await;
    c.close().await.unwrap();
}

// --- progress ------------------------------------------------------------------

/// The test operations plus one that reports progress and waits between its
/// reports for gate files (`<tmp>/stevedore-e2e-gate-<action>-1`, then `-2`),
/// so the test sees each report without assuming how long anything takes.
fn progress_config() -> String {
    TEST_CONFIG.to_string()
        + r#"
[[operation]]
object = "service"
verb = "deploy"
exec = ["sh", "-c", """
gate() { i=0; while [ ! -e "${TMPDIR:-/tmp}/stevedore-e2e-gate-$STEVEDORE_ACTION_UUID-$1" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; }
echo 'pulling image'
echo '::progress 42 Copying layers'
gate 1
echo 'layers copied'
echo '::progress 80 Extracting'
gate 2
echo done
"""]
"#
}

/// Opens gate `n` of the action `uuid`; removes both when dropped.
struct Gates(String);

impl Gates {
    fn path(&self, n: u8) -> PathBuf {
        std::env::temp_dir().join(format!("stevedore-e2e-gate-{}-{n}", self.0))
    }
    fn open(&self, n: u8) {
        std::fs::write(self.path(n), b"go").unwrap();
    }
}

impl Drop for Gates {
    fn drop(&mut self) {
        for n in [1, 2] {
            let _ = std::fs::remove_file(self.path(n));
        }
    }
}

/// Logs in through the form with the deployment's user and key.
async fn log_in(c: &Client, base: &str, d: &Deployment) {
    c.goto(&format!("{base}/")).await.unwrap();
    log_in_as(c, &d.user, &d.key).await;
    until(
        c,
        "the events stream",
        "document.getElementById('live').classList.contains('on')",
    )
    .await;
}

/// The text and value of the action page's progress bar, once it shows `percent`.
async fn progress_shows(c: &Client, percent: u8) -> Value {
    until(
        c,
        &format!("the progress bar at {percent}%"),
        &format!(
            "(() => {{ const p = document.getElementById('progress'); \
             return p && !p.hidden && p.getAttribute('aria-valuenow') === '{percent}' \
               && {{ text: p.textContent, width: p.querySelector('.progress-fill').style.width }}; }})()"
        ),
    )
    .await
}

async fn dashboard_progress(backend: Backend) {
    let _one = ONE_BROWSER.lock().await;
    let mut d = Deployment::start_with(backend, &progress_config()).await;
    let base = d.dashboard_url().await;
    let save: Option<PathBuf> = (backend == Backend::Embedded).then(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    let driver = Driver::start().await;
    let c = driver.browser().await;
    log_in(&c, &base, &d).await;

    let svc = d.new_service().await;
    let uuid = d.submit(&svc, "deploy", None).await;
    let gates = Gates(uuid.clone());

    // The actions list shows a small bar in the running action's row.
    c.goto(&format!("{base}/#/actions")).await.unwrap();
    until(
        &c,
        "the running action's bar in the list",
        &format!(
            "document.querySelector('#page tr[data-uuid=\"{uuid}\"] .progress:not([hidden])')\
             ?.getAttribute('aria-valuenow') === '42'"
        ),
    )
    .await;

    // The action page: the bar with the report's message, then the next
    // report live (no reload; the action is still running).
    c.goto(&format!("{base}/#/action/{uuid}")).await.unwrap();
    title_state(&c, "In progress").await;
    let shown = progress_shows(&c, 42).await;
    assert!(
        shown["text"].as_str().unwrap().contains("42% · Copying layers"),
        "{shown}"
    );
    assert_eq!(shown["width"], "42%");
    until(
        &c,
        "the log lines without the reports",
        "document.getElementById('logs').textContent.includes('pulling image')",
    )
    .await;
    assert_eq!(
        js(
            &c,
            "return document.getElementById('logs').textContent.includes('::progress')"
        )
        .await,
        false,
        "reports are not log lines"
    );
    screenshot(&c, save.as_deref(), "progress").await;
    js(&c, "window.__stillHere = true; return true;").await;
    gates.open(1);
    let shown = progress_shows(&c, 80).await;
    assert!(shown["text"].as_str().unwrap().contains("Extracting"), "{shown}");
    assert_eq!(
        js(&c, "return document.querySelector('h1 .state').dataset.state").await,
        "In progress",
        "the bar moved while the action runs"
    );
    assert_eq!(
        js(&c, "return window.__stillHere === true").await,
        true,
        "no reload"
    );

    // It ends; the last report stays.
    gates.open(2);
    title_state(&c, "Success").await;
    progress_shows(&c, 80).await;
    c.close().await.unwrap();
}

// --- queue positions ---------------------------------------------------------

/// A Pending action's page says where it waits ("Queued #3, waiting for
/// <the action ahead>") and its place moves live when an action ahead
/// leaves the queue; the list shows the places next to the states.
async fn queue_positions_in_the_dashboard(backend: Backend) {
    let _one = ONE_BROWSER.lock().await;
    let mut d = Deployment::start_with(backend, &config()).await;
    let base = d.dashboard_url().await;
    let save: Option<PathBuf> = (backend == Backend::Embedded)
        .then(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots"));
    let svc = d.new_service().await;
    let running = d.submit(&svc, "deploy", None).await;
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(d.submit(&svc, "noop", None).await);
    }
    let [b, c_uuid, last] = [0, 1, 2].map(|i| waiting[i].clone());
    let driver = Driver::start().await;
    let c = driver.browser().await;
    log_in(&c, &base, &d).await;

    c.goto(&format!("{base}/#/action/{last}")).await.unwrap();
    let line = until(
        &c,
        "the queue line",
        "document.querySelector('#queue .queue-line')?.textContent",
    )
    .await;
    assert_eq!(line, format!("Queued #3, waiting for {}", &c_uuid[..8]));
    assert_eq!(
        js(
            &c,
            "return document.querySelector('#queue a').getAttribute('href')"
        )
        .await,
        format!("#/action/{c_uuid}")
    );
    screenshot(&c, save.as_deref(), "queue-position").await;

    // The head of the queue is canceled: this page moves up, live (the
    // stream's one event names the first behind the canceled action).
    let (status, _, _) = d
        .request(
            reqwest::Method::POST,
            &format!("/api/audit/v1/action/{b}/cancel/"),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED);
    until(
        &c,
        "the page to move up to #2",
        &format!(
            "document.querySelector('#queue .queue-line')?.textContent === {:?}",
            format!("Queued #2, waiting for {}", &c_uuid[..8])
        ),
    )
    .await;

    // The list shows each place next to its state.
    let (_, _, svc_json) = d
        .request(reqwest::Method::GET, &format!("/api/app/v1/service/{svc}/"), None)
        .await;
    let svc_uri = svc_json["resource_uri"].as_str().unwrap().to_string();
    c.goto(&format!("{base}/#/actions?object={svc_uri}"))
        .await
        .unwrap();
    let places = until(
        &c,
        "the places in the list",
        &format!(
            "(() => {{ const q = (u) => document.querySelector(`tr[data-uuid=\"${{u}}\"] .queue`)?.textContent; \
             const a = q({c_uuid:?}), z = q({last:?}); return a && z ? [a, z] : null; }})()"
        ),
    )
    .await;
    assert_eq!(places, json!(["#1", "#2"]));
    assert_eq!(
        js(
            &c,
            &format!(
                "const r = document.querySelector('tr[data-uuid=\"{running}\"]'); \
                 return r ? r.querySelector('.queue') === null : 'not listed'"
            )
        )
        .await,
        json!(true),
        "a running action has no place"
    );
    c.close().await.unwrap();
}

// --- the workers page -----------------------------------------------------------

/// Logs in through the form as `(user, key)` and waits for the header.
async fn log_in_as(c: &Client, user: &str, key: &str) {
    until(c, "the login form", "!document.getElementById('login').hidden").await;
    // The form keeps the last user name typed.
    let user_field = c.find(Locator::Id("login-user")).await.unwrap();
    user_field.clear().await.unwrap();
    user_field.send_keys(user).await.unwrap();
    let key_field = c.find(Locator::Id("login-key")).await.unwrap();
    key_field.clear().await.unwrap();
    key_field.send_keys(&format!("{key}\u{E007}")).await.unwrap();
    until(
        c,
        "the dashboard header",
        "!document.getElementById('top').hidden",
    )
    .await;
}

/// An admin sees the Workers page with every live worker and the action one
/// runs, follows it to the action; a user who is no admin has no such page.
async fn workers_page_in_a_browser(backend: Backend) {
    let _one = ONE_BROWSER.lock().await;
    let config = TEST_CONFIG.replacen(
        "[worker]\n",
        "[worker]\nregistry_heartbeat = \"300ms\"\nregistry_lease = \"2s\"\n",
        1,
    );
    let mut d = Deployment::start_with(backend, &config).await;
    let workers = match backend {
        Backend::Embedded => 1,
        Backend::PostgresRabbit => {
            let (ok, _, err) = d.admin(&["user", "grant-admin", &d.user]).await;
            assert!(ok, "{err}");
            d.start_worker("worker-2").await;
            2
        }
    };
    let (ok, out, err) = d.admin(&["user", "create", "bob"]).await;
    assert!(ok, "{err}");
    let bob = crate::support::deployment::exports(&out);
    let base = d.dashboard_url().await;
    let save: Option<PathBuf> = (backend == Backend::Embedded).then(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    let save = save.as_deref();
    let driver = Driver::start().await;
    let c = driver.browser().await;

    c.goto(&format!("{base}/")).await.unwrap();
    log_in_as(&c, &d.user, &d.key).await;
    follow(&c, "#nav", "Workers").await;
    until(
        &c,
        "every worker on the page",
        &format!("document.querySelectorAll('#page tr[data-worker]').length === {workers}"),
    )
    .await;
    // A running action shows on its worker's row.
    let svc = d.new_service().await;
    let uuid = d.submit(&svc, "sleep", Some(r#"{"seconds": 60}"#)).await;
    let link = format!("#page tr[data-worker] a[href='#/action/{uuid}']");
    until(
        &c,
        "the running action on its worker",
        &format!("document.querySelector({link:?})"),
    )
    .await;
    let summary = js(
        &c,
        "return document.getElementById('workers-summary').textContent",
    )
    .await;
    assert!(
        summary.as_str().unwrap().contains("1 of"),
        "one slot busy: {summary}"
    );
    assert_eq!(
        js(
            &c,
            "return document.querySelector('#nav a[aria-current=page]').textContent"
        )
        .await,
        "Workers"
    );
    screenshot(&c, save, "workers").await;
    click(&c, &link).await;
    title_state(&c, "In progress").await;
    let (status, _, _) = d
        .request(
            reqwest::Method::POST,
            &format!("/api/audit/v1/action/{uuid}/cancel/"),
            None,
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::ACCEPTED);
    title_state(&c, "Canceled").await;

    // Someone who is no admin gets no Workers entry, and no page.
    click(&c, "#logout").await;
    log_in_as(&c, &bob["STEVEDORE_USER"], &bob["STEVEDORE_APIKEY"]).await;
    until(&c, "the actions page", "document.querySelector('#page h1')").await;
    let entries = js(
        &c,
        "return [...document.querySelectorAll('#nav a')].map(a => a.textContent)",
    )
    .await;
    assert!(
        !entries.as_array().unwrap().iter().any(|e| e == "Workers"),
        "{entries}"
    );
    c.goto(&format!("{base}/#/workers")).await.unwrap();
    until(
        &c,
        "the actions page instead",
        "document.querySelector('#page h1')?.textContent === 'Actions'",
    )
    .await;
    assert_eq!(
        js(
            &c,
            "return document.querySelectorAll('#page tr[data-worker]').length"
        )
        .await,
        0
    );
    c.close().await.unwrap();
}

// --- webhooks ------------------------------------------------------------------

/// The Webhooks page: add a webhook (its secret shown once), watch a
/// delivery reach the receiver and the delivery log, remove the webhook.
async fn webhooks_in_the_dashboard(backend: Backend) {
    let _one = ONE_BROWSER.lock().await;
    let config = format!(
        "{}\n[webhooks]\nallow_private_networks = true\npoll_interval = \"100ms\"\n",
        config()
    );
    let mut d = Deployment::start_with(backend, &config).await;
    let base = d.dashboard_url().await;
    let save: Option<PathBuf> = (backend == Backend::Embedded).then(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    let save = save.as_deref();
    let rx = crate::webhooks::Receiver::start().await;
    let svc = d.new_service().await;
    let driver = Driver::start().await;
    let c = driver.browser().await;
    c.goto(&format!("{base}/")).await.unwrap();
    log_in_as(&c, &d.user, &d.key).await;

    follow(&c, "#nav", "Webhooks").await;
    until(
        &c,
        "the webhook form",
        "document.getElementById('new-webhook-url')",
    )
    .await;
    c.find(Locator::Id("new-webhook-url"))
        .await
        .unwrap()
        .send_keys(&format!("{}/ok", rx.url))
        .await
        .unwrap();
    js(
        &c,
        "document.getElementById('new-webhook-type').value = 'service'; return true;",
    )
    .await;
    click(&c, "form[aria-label='Add a webhook'] button[type=submit]").await;
    until(
        &c,
        "the signing secret",
        "!document.getElementById('webhook-secret').hidden && document.getElementById('webhook-secret').textContent.includes('whsec_')",
    )
    .await;
    until(
        &c,
        "the new webhook's row",
        "document.querySelector('tr[data-uuid]')",
    )
    .await;
    let (_, _, list) = d.request(reqwest::Method::GET, "/api/v1/webhook/", None).await;
    assert_eq!(list["objects"][0]["object_type"], "service", "{list}");
    assert_eq!(
        list["objects"][0]["states"],
        json!(["Success", "Failed"]),
        "{list}"
    );

    let action = d.submit(&svc, "start", None).await;
    rx.wait_for("ok", 1, &d).await;
    click(&c, "tr[data-uuid] a").await;
    until(
        &c,
        "a delivered row in the log",
        "document.querySelector('tr[data-status=\"delivered\"]')",
    )
    .await;
    let shown = js(&c, "return document.querySelector('tr[data-status]').innerText").await;
    assert!(shown.as_str().unwrap().contains("HTTP 200"), "{shown}");
    assert!(
        js(
            &c,
            "return document.querySelector('tr[data-status] a').getAttribute('href')"
        )
        .await
        .as_str()
        .unwrap()
        .ends_with(&action),
        "the row links its action"
    );
    screenshot(&c, save, "webhooks").await;

    follow(&c, "#nav", "Webhooks").await;
    until(
        &c,
        "the remove button",
        "document.querySelector('button[data-remove]')",
    )
    .await;
    click(&c, "button[data-remove]").await;
    until(
        &c,
        "the empty list",
        "document.querySelector('#page .empty')?.textContent === 'No webhooks yet.'",
    )
    .await;
    let (_, _, list) = d.request(reqwest::Method::GET, "/api/v1/webhook/", None).await;
    assert_eq!(list["meta"]["total_count"], 0, "{list}");
    c.close().await.unwrap();
}

// --- Server-Sent Events: a browser's EventSource on the stream routes ---------

/// The test operations plus one that prints 20 lines over two seconds.
fn event_source_config() -> String {
    format!(
        r#"{TEST_CONFIG}
[[operation]]
object = "service"
verb = "count"
exec = ["sh", "-c", "for i in $(seq 1 20); do echo \"step $i\"; sleep 0.1; done"]
"#
    )
}

/// What the page's `EventSource`s saw, shown in a panel for the screenshot.
const EVENT_SOURCE_SCRIPT: &str = r#"
const s = window.sseDemo = {events: [], lines: [], ids: [], closes: [], opens: 0};
const panel = document.createElement('pre');
panel.id = 'sse-demo';
panel.style.cssText = 'position:fixed;right:12px;bottom:12px;width:560px;max-height:70vh;overflow:auto;' +
  'margin:0;padding:10px;background:#111;color:#eee;font:12px/1.4 monospace;border-radius:6px;z-index:99';
document.body.appendChild(panel);
s.render = () => {
  const logs = s.es && s.es.readyState === 2 ? 'closed (no reconnect)' : 'open';
  panel.textContent = 'EventSource /api/audit/v1/events\n' +
    s.events.map(e => `  id: ${e.id}  ${e.type} ${e.action || ''} ${e.state || ''}`).join('\n') +
    `\n\nEventSource …/action/<uuid>/logs/ (${logs})\n` +
    s.lines.map((l, i) => `  id: ${s.ids[i]}  ${l}`).join('\n') +
    s.closes.map(c => `\n  event: close  code ${c}`).join('');
};
const events = new EventSource('/api/audit/v1/events');
events.onmessage = (m) => {
  const f = JSON.parse(m.data);
  s.events.push({id: m.lastEventId, type: f.type, action: f.action, state: f.state, uuid: f.uuid,
                 seq: f.seq, namespace: f.namespace, user: f.data && f.data.user});
  s.render();
};
s.follow = (uuid) => {
  const es = s.es = new EventSource(`/api/audit/v1/action/${uuid}/logs/`);
  es.onopen = () => { s.opens++; };
  es.onmessage = (m) => { s.ids.push(m.lastEventId); s.lines.push(JSON.parse(m.data).log); s.render(); };
  es.addEventListener('close', (m) => { s.closes.push(JSON.parse(m.data).code); s.render(); });
  es.onerror = () => s.render();
};
s.render();
return true;
"#;

/// A browser's `EventSource`, authenticated by the dashboard's session
/// cookie alone: the events stream shows an action's events with their
/// `seq` as ids, and its logs stream ends at the final state; the browser
/// then reconnects by itself with `Last-Event-ID`, gets a 204 and stops,
/// having seen every line exactly once.
async fn event_source_follows_streams_with_the_session_cookie(backend: Backend) {
    let _one = ONE_BROWSER.lock().await;
    let mut d = Deployment::start_with(backend, &event_source_config()).await;
    let base = d.dashboard_url().await;
    let save: Option<PathBuf> = (backend == Backend::Embedded).then(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    let driver = Driver::start().await;
    let c = driver.browser().await;
    log_in(&c, &base, &d).await;

    js(&c, EVENT_SOURCE_SCRIPT).await;
    let hello = until(
        &c,
        "the auth frame",
        "window.sseDemo.events.find(e => e.type === 'auth')",
    )
    .await;
    assert_eq!(hello["user"], d.user.as_str(), "{hello}");
    let svc = d.new_service().await;
    let uuid = d.submit(&svc, "count", None).await;
    js(&c, &format!("window.sseDemo.follow({uuid:?}); return true;")).await;
    until(
        &c,
        "the action's final event",
        &format!("window.sseDemo.events.find(e => e.uuid === {uuid:?} && e.state === 'Success')"),
    )
    .await;
    // The logs stream closed at the final state; the browser's own
    // reconnect (with Last-Event-ID) got a 204 and it gave up.
    until(
        &c,
        "the logs EventSource to stop reconnecting",
        "window.sseDemo.closes.length > 0 && window.sseDemo.es.readyState === 2",
    )
    .await;
    let seen = js(&c, "return window.sseDemo;").await;
    let lines: Vec<String> = (1..=20).map(|i| format!("step {i}")).collect();
    let ids: Vec<String> = (1..=20).map(|i| i.to_string()).collect();
    assert_eq!(seen["lines"], json!(lines), "every line once: {seen}");
    assert_eq!(seen["ids"], json!(ids));
    assert_eq!(seen["closes"], json!([1000]));
    assert_eq!(
        seen["opens"], 1,
        "the reconnect was refused (204), not served again"
    );
    // The events' ids are their seqs, in order.
    let events = seen["events"].as_array().unwrap();
    for e in events.iter().filter(|e| e["type"] != "auth") {
        assert_eq!(e["id"], e["seq"].as_i64().unwrap().to_string(), "{e}");
        assert_eq!(e["namespace"], d.user.as_str());
    }
    js(&c, "window.sseDemo.render(); return true;").await;
    screenshot(&c, save.as_deref(), "sse").await;
    c.close().await.unwrap();
}

on_both_backends!(backend;
    dashboard_end_to_end,
    dashboard_progress,
    queue_positions_in_the_dashboard,
    workers_page_in_a_browser,
    webhooks_in_the_dashboard,
    event_source_follows_streams_with_the_session_cookie,
);
