//! Checks the deployment files under `deploy/` without building an image or
//! reaching a cluster: every YAML, JSON, TOML and INI-style file parses, and
//! each says what the code expects of it (roles, probes, security context,
//! broker topology, configuration).

use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use stevedore_core::broker::{BrokerNames, JOB_DELIVERY_LIMIT};
use stevedore_core::config::FileConfig;
use stevedore_core::config::HAND_BACK_WINDOW;

/// Files under `deploy/` that are not structured data, checked elsewhere or read by people.
const NOT_PARSED: &[&str] = &["Dockerfile", "README.md"];
/// Where every role reads `stevedore.toml`.
const CONFIG_PATH: &str = "/etc/stevedore/stevedore.toml";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Seconds a worker with deploy/stevedore.toml's settings needs between
/// SIGTERM and its exit: the drain, the kill grace and the hand-back. Every
/// platform's grace period must be at least this, and at least the
/// `stop_timeout` the worker checks its own settings against.
fn worker_stop_needs() -> u64 {
    let text = std::fs::read_to_string(root().join("deploy/stevedore.toml")).unwrap();
    let w = FileConfig::parse(&text)
        .expect("deploy/stevedore.toml parses")
        .worker;
    let needs = w.shutdown_deadline + w.kill_grace + HAND_BACK_WINDOW;
    needs.max(w.stop_timeout).as_secs()
}

fn deploy() -> PathBuf {
    root().join("deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rel(path: &Path) -> String {
    path.strip_prefix(root()).unwrap_or(path).display().to_string()
}

/// Every file under `dir`, sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

// ---------------------------------------------------------------- parsers

/// All documents of a YAML file, as JSON values (merge keys `<<` applied,
/// empty documents skipped).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = read(path);
    let mut docs = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
        let mut doc = serde_yaml_ng::Value::deserialize(de)
            .unwrap_or_else(|e| panic!("{} document {i}: {e}", rel(path)));
        doc.apply_merge()
            .unwrap_or_else(|e| panic!("{} document {i}: merge keys: {e}", rel(path)));
        if doc.is_null() {
            continue;
        }
        let json = serde_json::to_value(&doc)
            .unwrap_or_else(|e| panic!("{} document {i}: not JSON-like: {e}", rel(path)));
        docs.push(json);
    }
    docs
}

fn yaml_doc(path: &Path) -> Value {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{}: expected one YAML document", rel(path));
    docs.remove(0)
}

fn json_file(path: &Path) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", rel(path)))
}

/// A minimal INI reader for systemd units, `rabbitmq.conf` (sectionless
/// `key = value`) and environment files: `(section, key, value)` triples in
/// order. Comments start with `#` or `;`; keys may repeat.
fn ini(path: &Path) -> Vec<(String, String, String)> {
    ini_text(&read(path), &rel(path))
}

/// [`ini`] of a text that is not a file of its own (`what` names it in messages).
fn ini_text(text: &str, what: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .unwrap_or_else(|| panic!("{what}:{}: unclosed section", n + 1));
            section = name.to_string();
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{what}:{}: not `key = value`: {line}", n + 1));
        let k = k.trim();
        assert!(
            !k.is_empty() && !k.contains(char::is_whitespace),
            "{what}:{}: bad key {k:?}",
            n + 1
        );
        out.push((section.clone(), k.to_string(), v.trim().to_string()));
    }
    out
}

/// The last value of `key` in `section` (later assignments win, as in systemd).
fn ini_get<'a>(entries: &'a [(String, String, String)], section: &str, key: &str) -> Option<&'a str> {
    entries
        .iter()
        .rev()
        .find(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
}

// ---------------------------------------------------------------- helpers

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("missing string at {pointer} in {v:#}"))
}

fn arr<'a>(v: &'a Value, pointer: &str) -> &'a Vec<Value> {
    v.pointer(pointer)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("missing array at {pointer}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an array of strings, got {v}"))
        .iter()
        .map(|x| x.as_str().expect("a string").to_string())
        .collect()
}

fn k8s_docs() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for p in walk(&deploy().join("k8s")) {
        let ext = p.extension().and_then(|e| e.to_str());
        assert!(
            matches!(ext, Some("yaml" | "yml")),
            "{}: only YAML manifests belong in deploy/k8s",
            rel(&p)
        );
        for d in yaml_docs(&p) {
            out.push((rel(&p), d));
        }
    }
    out
}

fn find<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .map(|(_, d)| d)
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} named {name} in deploy/k8s"))
}

fn duration_secs(v: &Value) -> u64 {
    let text = v
        .as_str()
        .unwrap_or_else(|| panic!("expected a duration, got {v}"));
    let (num, mult) = if let Some(m) = text.strip_suffix('m') {
        (m, 60)
    } else {
        (text.strip_suffix('s').unwrap_or(text), 1)
    };
    num.parse::<u64>()
        .unwrap_or_else(|_| panic!("bad duration {text:?}"))
        * mult
}

/// `[broker] job_queues` of deploy/stevedore.toml: the one place where
/// every role of every deployment here reads the job queue count from.
fn deploy_job_queues() -> u16 {
    let text = read(&deploy().join("stevedore.toml"));
    FileConfig::parse(&text)
        .expect("deploy/stevedore.toml parses")
        .broker
        .job_queues
}

/// The broker names every role of these deployments uses.
fn deploy_broker_names() -> BrokerNames {
    BrokerNames::default().with_job_queues(deploy_job_queues())
}

/// One URL of an `amqp://user:password@host:port/vhost` list.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AmqpUrl {
    user: String,
    password: String,
    host: String,
    port: u16,
    vhost: String,
}

/// The URLs of a comma-separated list, as `STEVEDORE_AMQP_URL` takes them.
fn amqp_urls(list: &str) -> Vec<AmqpUrl> {
    list.split(',')
        .map(|url| {
            let rest = url
                .trim()
                .strip_prefix("amqp://")
                .unwrap_or_else(|| panic!("not an amqp:// URL: {url}"));
            let (credentials, rest) = rest
                .split_once('@')
                .unwrap_or_else(|| panic!("no credentials in {url}"));
            let (user, password) = credentials
                .split_once(':')
                .unwrap_or_else(|| panic!("no password in {url}"));
            let (authority, vhost) = rest
                .split_once('/')
                .unwrap_or_else(|| panic!("no vhost in {url}"));
            let (host, port) = authority
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("no port in {url}"));
            AmqpUrl {
                user: user.to_string(),
                password: password.to_string(),
                host: host.to_string(),
                port: port.parse().unwrap_or_else(|_| panic!("bad port in {url}")),
                vhost: vhost.to_string(),
            }
        })
        .collect()
}

fn compose() -> Value {
    yaml_doc(&deploy().join("docker-compose.yml"))
}

/// The RabbitMQ nodes of the compose file: its services running the RabbitMQ image.
fn compose_rabbitmq_nodes(compose: &Value) -> Vec<String> {
    compose["services"]
        .as_object()
        .expect("services")
        .iter()
        .filter(|(_, svc)| svc["image"].as_str().is_some_and(|i| i.starts_with("rabbitmq:")))
        .map(|(name, _)| name.clone())
        .collect()
}

/// The value of environment variable `name` of a Kubernetes container.
fn container_env<'a>(what: &str, container: &'a Value, name: &str) -> &'a Value {
    container["env"]
        .as_array()
        .and_then(|env| env.iter().find(|e| e["name"] == name))
        .map(|e| &e["value"])
        .unwrap_or_else(|| panic!("{what}: no environment variable {name}"))
}

/// Bytes of a Kubernetes quantity or a RabbitMQ information unit (`2Gi`, `1600MiB`).
fn bytes(quantity: &str) -> u64 {
    let units: [(&str, u64); 6] = [
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
    ];
    for (suffix, mult) in units {
        if let Some(n) = quantity.strip_suffix(suffix) {
            return n
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("bad quantity {quantity:?}"))
                * mult;
        }
    }
    quantity
        .parse()
        .unwrap_or_else(|_| panic!("bad quantity {quantity:?}"))
}

// ---------------------------------------------------------------- tests

#[test]
fn every_deploy_file_parses() {
    let files = walk(&deploy());
    assert!(!files.is_empty());
    for p in &files {
        let name = p.file_name().unwrap().to_str().unwrap();
        match p.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => assert!(!yaml_docs(p).is_empty(), "{}: empty", rel(p)),
            Some("json") => {
                json_file(p);
            }
            Some("toml") => {
                toml::from_str::<toml::Table>(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", rel(p)));
            }
            Some("service" | "conf" | "ini" | "example") => {
                assert!(!ini(p).is_empty(), "{}: empty", rel(p));
            }
            _ => assert!(
                NOT_PARSED.contains(&name),
                "{}: unknown kind of file; teach tests/e2e/deploy_manifests.rs to check it",
                rel(p)
            ),
        }
    }
}

#[test]
fn deploy_config_parses_and_its_operations_validate() {
    let text = read(&deploy().join("stevedore.toml"));
    let config = FileConfig::parse(&text).expect("deploy/stevedore.toml parses");
    let ops = config
        .operations()
        .expect("deploy/stevedore.toml operations validate");
    assert!(
        !ops.all().is_empty(),
        "deploy/stevedore.toml declares no operation"
    );
    assert!(
        config.database_url.is_none() && config.amqp_url.is_none(),
        "connection URLs (and their passwords) come from the environment, not the shared config"
    );
    assert_eq!(
        config.broker_prefix.as_deref().unwrap_or("stevedore"),
        BrokerNames::default().prefix
    );
}

#[test]
fn k8s_documents_have_identity_and_namespace() {
    let docs = k8s_docs();
    assert!(!docs.is_empty());
    for (file, d) in &docs {
        for key in ["apiVersion", "kind"] {
            assert!(
                d[key].as_str().is_some_and(|v| !v.is_empty()),
                "{file}: a document has no {key}"
            );
        }
        let name = d["metadata"]["name"].as_str().unwrap_or_default();
        assert!(!name.is_empty(), "{file}: a {} has no metadata.name", d["kind"]);
        let cluster_scoped = matches!(d["kind"].as_str(), Some("Namespace" | "Kustomization"));
        if !cluster_scoped {
            assert_eq!(
                d["metadata"]["namespace"], "stevedore",
                "{file}: {} {name} is not in namespace stevedore",
                d["kind"]
            );
        }
    }
}

/// The examples of Secrets the operator creates: never applied by a kustomization.
const SECRET_EXAMPLE: &str = "secret.example.yaml";

#[test]
fn each_kustomization_lists_the_manifests_of_its_directory_but_the_secret_example() {
    let k8s = deploy().join("k8s");
    let dirs: BTreeSet<PathBuf> = walk(&k8s)
        .iter()
        .map(|p| p.parent().unwrap().to_path_buf())
        .collect();
    // The base (Stevedore's roles) and rabbitmq/ (a RabbitMQ cluster for
    // them), each applied on its own.
    assert_eq!(dirs, BTreeSet::from([k8s.clone(), k8s.join("rabbitmq")]));
    for dir in &dirs {
        let what = rel(dir);
        let k = yaml_doc(&dir.join("kustomization.yaml"));
        assert_eq!(k["kind"], "Kustomization", "{what}");
        assert_eq!(k["namespace"], "stevedore", "{what}");
        let listed: BTreeSet<String> = strings(&k["resources"]).into_iter().collect();
        let present: BTreeSet<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
            .filter(|n| n != "kustomization.yaml" && n != SECRET_EXAMPLE)
            .collect();
        // Nothing else either: the base does not run the RabbitMQ cluster.
        assert_eq!(listed, present, "{what}/kustomization.yaml");
        assert!(dir.join(SECRET_EXAMPLE).is_file(), "{what}: no {SECRET_EXAMPLE}");
    }
}

#[test]
fn k8s_secret_examples_hold_placeholders_only() {
    let url_keys = BTreeSet::from(["STEVEDORE_AMQP_URL", "STEVEDORE_DATABASE_URL"]);
    for (file, expected) in [
        (
            "k8s/secret.example.yaml",
            vec![("stevedore-secrets", url_keys.clone())],
        ),
        (
            "k8s/rabbitmq/secret.example.yaml",
            vec![
                (
                    "stevedore-rabbitmq",
                    BTreeSet::from(["erlang-cookie", "users.json"]),
                ),
                ("stevedore-secrets", url_keys.clone()),
            ],
        ),
    ] {
        let docs = yaml_docs(&deploy().join(file));
        assert_eq!(docs.len(), expected.len(), "{file}");
        for (secret, (name, keys)) in docs.iter().zip(expected) {
            assert_eq!(secret["kind"], "Secret", "{file}");
            assert_eq!(secret["metadata"]["name"], name, "{file}");
            let data = secret["stringData"].as_object().expect("stringData");
            let present: BTreeSet<&str> = data.keys().map(String::as_str).collect();
            assert_eq!(present, keys, "{file}: {name}");
            for (k, v) in data {
                assert!(
                    v.as_str().unwrap().contains("CHANGE_ME"),
                    "{file}: {k} of {name} must be a marked placeholder"
                );
            }
            assert!(
                secret.get("data").is_none(),
                "{file}: base64 `data` would hide what is in it"
            );
        }
    }
}

#[test]
fn k8s_configmap_carries_deploy_stevedore_toml() {
    let docs = k8s_docs();
    let cm = find(&docs, "ConfigMap", "stevedore-config");
    assert_eq!(
        s(cm, "/data/stevedore.toml"),
        read(&deploy().join("stevedore.toml")),
        "deploy/k8s/configmap.yaml and deploy/stevedore.toml differ"
    );
}

/// The pod spec checks every Stevedore workload shares.
fn check_pod(what: &str, pod: &Value, role: &str) {
    let sc = &pod["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{what}: runAsNonRoot");
    assert!(
        sc["runAsUser"].as_u64().is_some_and(|u| u != 0),
        "{what}: runAsUser must be a non-root uid"
    );
    assert_eq!(pod["automountServiceAccountToken"], false, "{what}");
    let containers = arr(pod, "/containers");
    assert_eq!(containers.len(), 1, "{what}: one container");
    let c = &containers[0];
    assert!(
        s(c, "/image").starts_with("stevedore"),
        "{what}: image {}",
        c["image"]
    );
    let args = strings(&c["args"]);
    assert_eq!(
        args.first().map(String::as_str),
        Some(role),
        "{what}: args {args:?}"
    );
    let csc = &c["securityContext"];
    assert_eq!(
        csc["readOnlyRootFilesystem"], true,
        "{what}: readOnlyRootFilesystem"
    );
    assert_eq!(
        csc["allowPrivilegeEscalation"], false,
        "{what}: allowPrivilegeEscalation"
    );
    assert_eq!(csc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{what}");
    for r in ["cpu", "memory"] {
        assert!(
            c["resources"]["requests"][r].is_string(),
            "{what}: resources.requests.{r}"
        );
    }
    assert!(
        c["resources"]["limits"]["memory"].is_string(),
        "{what}: memory limit"
    );

    // The config file is mounted where STEVEDORE_CONFIG says.
    let env = c["env"].as_array().cloned().unwrap_or_default();
    let config_env = env
        .iter()
        .find(|e| e["name"] == "STEVEDORE_CONFIG")
        .unwrap_or_else(|| panic!("{what}: no STEVEDORE_CONFIG"));
    assert_eq!(config_env["value"], CONFIG_PATH, "{what}");
    let mount = arr(c, "/volumeMounts")
        .iter()
        .find(|m| m["mountPath"] == "/etc/stevedore")
        .unwrap_or_else(|| panic!("{what}: nothing mounted at /etc/stevedore"));
    let volume = arr(pod, "/volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("{what}: no volume {}", mount["name"]));
    assert_eq!(volume["configMap"]["name"], "stevedore-config", "{what}");

    // Database and broker URLs come from the Secret.
    let secret_refs: Vec<&Value> = c["envFrom"]
        .as_array()
        .map(|a| a.iter().map(|e| &e["secretRef"]["name"]).collect())
        .unwrap_or_default();
    let key_refs: Vec<&Value> = env
        .iter()
        .map(|e| &e["valueFrom"]["secretKeyRef"]["name"])
        .filter(|n| !n.is_null())
        .collect();
    assert!(
        secret_refs
            .iter()
            .chain(key_refs.iter())
            .any(|n| *n == "stevedore-secrets"),
        "{what}: reads no stevedore-secrets"
    );
}

fn check_http_probes(what: &str, pod: &Value) {
    let c = &pod["containers"][0];
    let port_name = s(c, "/ports/0/name");
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{what}: {probe}");
        assert_eq!(get["port"], port_name, "{what}: {probe} port");
    }
}

#[test]
fn k8s_workloads_are_secure_and_probed() {
    let docs = k8s_docs();
    let deployments: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == "Deployment")
        .collect();
    let names: BTreeSet<&str> = deployments.iter().map(|d| s(d, "/metadata/name")).collect();
    assert_eq!(
        names,
        BTreeSet::from(["stevedore-api", "stevedore-stream", "stevedore-worker"])
    );
    for d in &deployments {
        let name = s(d, "/metadata/name");
        let role = name.trim_start_matches("stevedore-");
        let pod = &d["spec"]["template"]["spec"];
        check_pod(name, pod, role);
        // The selector selects the pods of this template.
        let selector = d["spec"]["selector"]["matchLabels"].as_object().unwrap();
        for (k, v) in selector {
            assert_eq!(
                &d["spec"]["template"]["metadata"]["labels"][k], v,
                "{name}: selector {k}"
            );
        }
        match role {
            "api" | "stream" => check_http_probes(name, pod),
            "worker" => {
                // The worker's ops listener is optional: the manifest turns it
                // on, on the port its probes name.
                check_http_probes(name, pod);
                let c = &pod["containers"][0];
                let port = c["ports"][0]["containerPort"].as_u64().unwrap();
                let listen = c["env"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|e| e["name"] == "STEVEDORE_LISTEN")
                    .unwrap_or_else(|| panic!("{name}: no STEVEDORE_LISTEN: no ops listener"));
                assert_eq!(listen["value"], format!("0.0.0.0:{port}"), "{name}");
                let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
                assert!(
                    grace >= worker_stop_needs(),
                    "{name}: terminationGracePeriodSeconds {grace} must cover the worker's {} s shutdown",
                    worker_stop_needs()
                );
            }
            other => panic!("unexpected role {other}"),
        }
    }
    let stream = find(&docs, "Deployment", "stevedore-stream");
    let args = strings(&stream["spec"]["template"]["spec"]["containers"][0]["args"]);
    assert_eq!(args, ["stream", "--listen", "0.0.0.0:8081"]);

    let job = find(&docs, "Job", "stevedore-migrate");
    let pod = &job["spec"]["template"]["spec"];
    check_pod("stevedore-migrate", pod, "migrate");
    assert!(matches!(
        pod["restartPolicy"].as_str(),
        Some("OnFailure" | "Never")
    ));
}

#[test]
fn k8s_services_and_pdb_select_their_deployments() {
    let docs = k8s_docs();
    for role in ["api", "stream"] {
        let name = format!("stevedore-{role}");
        let d = find(&docs, "Deployment", &name);
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        let svc = find(&docs, "Service", &name);
        let selector = svc["spec"]["selector"].as_object().unwrap();
        assert!(!selector.is_empty());
        for (k, v) in selector {
            assert_eq!(&labels[k], v, "Service {name}: selector {k}");
        }
        let port_name = &d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["name"];
        assert_eq!(
            &svc["spec"]["ports"][0]["targetPort"], port_name,
            "Service {name}"
        );
    }
    let pdb = find(&docs, "PodDisruptionBudget", "stevedore-api");
    let api = find(&docs, "Deployment", "stevedore-api");
    for (k, v) in pdb["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(
            &api["spec"]["template"]["metadata"]["labels"][k], v,
            "PDB selector {k}"
        );
    }
    let min = pdb["spec"]["minAvailable"].as_u64().expect("minAvailable");
    assert!(min >= 1 && min < api["spec"]["replicas"].as_u64().unwrap());
}

#[test]
fn k8s_hpa_scales_workers_on_job_queue_depth() {
    let docs = k8s_docs();
    let hpas: Vec<&Value> = docs
        .iter()
        .map(|(_, d)| d)
        .filter(|d| d["kind"] == "HorizontalPodAutoscaler")
        .collect();
    assert_eq!(hpas.len(), 1);
    let hpa = hpas[0];
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(target["kind"], "Deployment");
    assert_eq!(target["name"], "stevedore-worker");
    find(&docs, "Deployment", "stevedore-worker");
    let metric = &hpa["spec"]["metrics"][0];
    assert_eq!(metric["type"], "External");
    assert_eq!(
        metric["external"]["metric"]["name"],
        "rabbitmq_queue_messages_ready"
    );
    // Every job queue, and only those (not the dead letters): the HPA adds
    // up the values of all the series the selector matches.
    let selector = &metric["external"]["metric"]["selector"];
    assert!(
        selector["matchLabels"]["queue"].is_null(),
        "one queue label would count one job queue of several"
    );
    let expressions = arr(selector, "/matchExpressions");
    assert_eq!(expressions.len(), 1, "{selector}");
    let queues = &expressions[0];
    assert_eq!(queues["key"], "queue");
    assert_eq!(queues["operator"], "In");
    let selected: BTreeSet<String> = strings(&queues["values"]).into_iter().collect();
    let expected: BTreeSet<String> = deploy_broker_names().job_queues().into_iter().collect();
    assert_eq!(
        selected,
        expected,
        "the HPA's queues are not the {} job queues of deploy/stevedore.toml",
        deploy_job_queues()
    );
    let min = hpa["spec"]["minReplicas"].as_u64().unwrap();
    let max = hpa["spec"]["maxReplicas"].as_u64().unwrap();
    assert!(1 <= min && min <= max);
}

const STEVEDORE_SERVICES: &[&str] = &["migrate", "api", "stream", "worker"];

#[test]
fn compose_runs_every_role_in_order() {
    let compose = compose();
    let services = compose["services"].as_object().expect("services");
    for name in ["postgres", "migrate", "api", "stream", "worker"] {
        assert!(services.contains_key(name), "compose: no service {name}");
    }
    let nodes = compose_rabbitmq_nodes(&compose);
    assert!(!nodes.is_empty(), "compose: no RabbitMQ service");
    let svc = |n: &str| &services[n];
    let depends = |n: &str, on: &str| svc(n)["depends_on"][on]["condition"].clone();

    assert_eq!(depends("migrate", "postgres"), "service_healthy");
    for role in ["api", "stream", "worker"] {
        assert_eq!(
            depends(role, "migrate"),
            "service_completed_successfully",
            "{role}"
        );
        // Each node must be up: the URL list names them all.
        for node in &nodes {
            assert_eq!(depends(role, node), "service_healthy", "{role} on {node}");
        }
    }
    assert_eq!(svc("migrate")["restart"], "no");
    assert_eq!(svc("worker")["deploy"]["replicas"], 2);

    for role in STEVEDORE_SERVICES {
        let s = svc(role);
        let command = strings(&s["command"]);
        assert_eq!(command[0], *role, "compose {role}: command {command:?}");
        assert_eq!(s["build"]["dockerfile"], "deploy/Dockerfile", "compose {role}");
        assert_eq!(
            s["environment"]["STEVEDORE_CONFIG"], CONFIG_PATH,
            "compose {role}"
        );
        let volumes = strings(&s["volumes"]);
        assert!(
            volumes
                .iter()
                .any(|v| v.starts_with(&format!("./stevedore.toml:{CONFIG_PATH}"))),
            "compose {role}: stevedore.toml not mounted: {volumes:?}"
        );
        assert!(
            duration_secs(&s["stop_grace_period"]) >= worker_stop_needs(),
            "compose {role}: stop_grace_period"
        );
        assert!(
            s["environment"]["STEVEDORE_DATABASE_URL"]
                .as_str()
                .is_some_and(|u| u.starts_with("postgres://")),
            "compose {role}"
        );
        if *role != "migrate" {
            assert!(
                s["restart"] == "unless-stopped" || s["restart"] == "always",
                "compose {role}: restart policy"
            );
        }
    }
    assert_eq!(
        strings(&svc("stream")["command"]),
        ["stream", "--listen", "0.0.0.0:8081"]
    );
    // The dashboard needs its websockets on the API's origin.
    assert_eq!(strings(&svc("api")["command"]), ["api", "--with-stream"]);
    assert!(strings(&svc("api")["ports"])
        .iter()
        .any(|p| p.ends_with("8080:8080")));
    assert!(strings(&svc("stream")["ports"])
        .iter()
        .any(|p| p.ends_with("8081:8081")));
    assert_eq!(
        strings(&svc("worker")["command"]),
        ["worker", "--listen", "0.0.0.0:9090"]
    );
    for name in ["postgres", "api", "stream", "worker"]
        .into_iter()
        .chain(nodes.iter().map(String::as_str))
    {
        let hc = &svc(name)["healthcheck"];
        assert!(
            hc["test"].is_array() && hc["disable"] != true,
            "compose {name}: healthcheck"
        );
    }
    for name in ["api", "stream", "worker"] {
        let test = strings(&svc(name)["healthcheck"]["test"]).join(" ");
        assert!(
            test.contains("/readyz") || test.contains("/healthz"),
            "compose {name}: {test}"
        );
    }
    assert!(svc("postgres")["image"]
        .as_str()
        .unwrap()
        .starts_with("postgres:15"));
    for node in &nodes {
        assert!(
            svc(node)["image"]
                .as_str()
                .unwrap()
                .starts_with("rabbitmq:3.12-management"),
            "compose {node}"
        );
        assert_eq!(
            svc(node)["environment"]["RABBITMQ_SCHEDULER_BUSY_WAIT_THRESHOLD"].as_str(),
            Some("none"),
            "compose {node}: RabbitMQ's schedulers must not spin on shared cores"
        );
    }
}

#[test]
fn compose_credentials_agree_across_services() {
    let compose = compose();
    let services = &compose["services"];
    let pg = &services["postgres"]["environment"];
    let defs = json_file(&deploy().join("rabbitmq/definitions.json"));
    for role in STEVEDORE_SERVICES {
        let env = &services[*role]["environment"];
        let db = format!(
            "postgres://{}:{}@postgres:5432/{}",
            s(pg, "/POSTGRES_USER"),
            s(pg, "/POSTGRES_PASSWORD"),
            s(pg, "/POSTGRES_DB")
        );
        assert_eq!(env["STEVEDORE_DATABASE_URL"], db.as_str(), "compose {role}");
        if *role == "migrate" {
            continue;
        }
        for url in amqp_urls(s(env, "/STEVEDORE_AMQP_URL")) {
            let user = url.user.as_str();
            assert!(
                arr(&defs, "/users").iter().any(|u| u["name"] == user),
                "compose {role}: AMQP user {user} is not in definitions.json"
            );
            assert!(
                arr(&defs, "/permissions")
                    .iter()
                    .any(|p| p["user"] == user && p["vhost"] == "/"),
                "compose {role}: {user} has no permissions on vhost /"
            );
            assert_eq!(url.vhost, "%2f", "compose {role}: vhost / is %2f");
        }
    }
}

#[test]
fn rabbitmq_definitions_match_the_broker_topology() {
    let names = deploy_broker_names();
    let defs = json_file(&deploy().join("rabbitmq/definitions.json"));
    let queue = |name: &str| {
        arr(&defs, "/queues")
            .iter()
            .find(|q| q["name"] == name)
            .unwrap_or_else(|| panic!("definitions.json: no queue {name}"))
            .clone()
    };
    let exchange = |name: &str| {
        arr(&defs, "/exchanges")
            .iter()
            .find(|x| x["name"] == name)
            .unwrap_or_else(|| panic!("definitions.json: no exchange {name}"))
            .clone()
    };

    // Every job queue of the configured count, and no other queue: a queue
    // of a larger count left here would be declared and never consumed.
    let declared: BTreeSet<String> = arr(&defs, "/queues")
        .iter()
        .map(|q| s(q, "/name").to_string())
        .collect();
    let mut expected_queues: BTreeSet<String> = names.job_queues().into_iter().collect();
    expected_queues.insert(names.dead_letter_queue());
    assert_eq!(
        declared, expected_queues,
        "definitions.json: the queues of {} job queues (deploy/stevedore.toml)",
        names.job_queue_count
    );
    assert!(names.job_queue_count >= 1);
    for (index, name) in names.job_queues().into_iter().enumerate() {
        let jobs = queue(&name);
        assert_eq!(jobs["durable"], true, "{name}");
        assert_eq!(jobs["auto_delete"], false, "{name}");
        assert_eq!(jobs["vhost"], "/", "{name}");
        // Exactly the arguments `AmqpBroker::declare` passes: any difference
        // makes RabbitMQ refuse the application's declaration
        // (PRECONDITION_FAILED). All job queues dead-letter alike.
        let mut expected: BTreeMap<String, Value> = BTreeMap::from([
            ("x-queue-type".into(), Value::from("quorum")),
            ("x-delivery-limit".into(), Value::from(JOB_DELIVERY_LIMIT)),
            (
                "x-dead-letter-exchange".into(),
                Value::from(names.dead_letter_exchange()),
            ),
        ]);
        if let Some(locator) = names.job_queue_leader_locator(index as u16) {
            expected.insert("x-queue-leader-locator".into(), Value::from(locator));
        }
        let args: BTreeMap<String, Value> = jobs["arguments"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(args, expected, "arguments of {name}");
    }

    let dead = queue(&names.dead_letter_queue());
    assert_eq!(dead["durable"], true);
    assert_eq!(dead["arguments"], serde_json::json!({}));

    for (name, kind) in [
        (names.dead_letter_exchange(), "fanout"),
        (names.updates_exchange(), "topic"),
        (names.control_exchange(), "fanout"),
    ] {
        let x = exchange(&name);
        assert_eq!(x["type"], kind, "exchange {name}");
        assert_eq!(x["durable"], true, "exchange {name}");
        assert_eq!(x["auto_delete"], false, "exchange {name}");
        assert_eq!(x["vhost"], "/", "exchange {name}");
    }
    assert!(
        arr(&defs, "/bindings").iter().any(|b| {
            b["source"] == names.dead_letter_exchange().as_str()
                && b["destination"] == names.dead_letter_queue().as_str()
                && b["destination_type"] == "queue"
        }),
        "definitions.json: {} is not bound to {}",
        names.dead_letter_exchange(),
        names.dead_letter_queue()
    );

    let policies = arr(&defs, "/policies");
    assert!(!policies.is_empty(), "definitions.json: no policy example");
    for p in policies {
        for key in ["vhost", "name", "pattern", "apply-to"] {
            assert!(p[key].is_string(), "policy {}: {key}", p["name"]);
        }
        assert!(p["definition"].is_object(), "policy {}: definition", p["name"]);
    }
    for u in arr(&defs, "/users") {
        assert!(
            u.get("password").is_none(),
            "definitions.json: user {} has a clear-text password",
            u["name"]
        );
    }
}

#[test]
fn rabbitmq_conf_loads_the_definitions_compose_mounts() {
    let conf = ini(&deploy().join("rabbitmq/rabbitmq.conf"));
    let path = ini_get(&conf, "", "load_definitions").expect("load_definitions");
    let compose = compose();
    for node in compose_rabbitmq_nodes(&compose) {
        let volumes = strings(&compose["services"][&node]["volumes"]);
        for (file, target) in [
            ("./rabbitmq/definitions.json", path),
            ("./rabbitmq/rabbitmq.conf", "/etc/rabbitmq/rabbitmq.conf"),
        ] {
            assert!(
                volumes.iter().any(|v| v.starts_with(&format!("{file}:{target}"))),
                "compose {node}: {file} not mounted at {target}: {volumes:?}"
            );
        }
    }
}

/// The nodes of a cluster: three, so that every quorum queue keeps a
/// majority of its members while one node is down.
const RABBITMQ_NODES: usize = 3;

#[test]
fn compose_runs_a_three_node_rabbitmq_cluster() {
    let compose = compose();
    let services = &compose["services"];
    let nodes = compose_rabbitmq_nodes(&compose);
    assert_eq!(nodes.len(), RABBITMQ_NODES, "compose: RabbitMQ nodes {nodes:?}");

    // Each node its own host name (its node name) and its own data volume.
    let hostnames: BTreeSet<String> = nodes
        .iter()
        .map(|n| s(&services[n], "/hostname").to_string())
        .collect();
    assert_eq!(
        hostnames.len(),
        RABBITMQ_NODES,
        "compose: node host names {hostnames:?}"
    );
    let declared_volumes = compose["volumes"].as_object().expect("top-level volumes");
    let mut data_volumes = BTreeSet::new();
    for node in &nodes {
        let volumes = strings(&services[node]["volumes"]);
        let data: Vec<&str> = volumes
            .iter()
            .filter_map(|v| v.strip_suffix(":/var/lib/rabbitmq"))
            .collect();
        assert_eq!(
            data.len(),
            1,
            "compose {node}: one volume at /var/lib/rabbitmq: {volumes:?}"
        );
        assert!(
            declared_volumes.contains_key(data[0]),
            "compose {node}: {} is not a named volume",
            data[0]
        );
        data_volumes.insert(data[0].to_string());
    }
    assert_eq!(
        data_volumes.len(),
        RABBITMQ_NODES,
        "compose: nodes share a data volume: {data_volumes:?}"
    );

    // One Erlang cookie, or the nodes cannot talk to each other.
    let cookies: BTreeSet<&str> = nodes
        .iter()
        .map(|n| s(&services[n], "/environment/RABBITMQ_ERLANG_COOKIE"))
        .collect();
    assert_eq!(cookies.len(), 1, "compose: the nodes' Erlang cookies differ");
    assert!(!cookies.first().unwrap().is_empty());

    // Cluster formation lists exactly these nodes.
    let conf = ini(&deploy().join("rabbitmq/rabbitmq.conf"));
    assert!(
        matches!(
            ini_get(&conf, "", "cluster_formation.peer_discovery_backend"),
            Some("classic_config" | "rabbit_peer_discovery_classic_config")
        ),
        "rabbitmq.conf: classic_config peer discovery"
    );
    let listed: BTreeSet<String> = conf
        .iter()
        .filter(|(_, k, _)| k.starts_with("cluster_formation.classic_config.nodes."))
        .map(|(_, _, v)| v.clone())
        .collect();
    let expected: BTreeSet<String> = hostnames.iter().map(|h| format!("rabbit@{h}")).collect();
    assert_eq!(listed, expected, "rabbitmq.conf: classic_config nodes");
    check_cluster_settings("deploy/rabbitmq/rabbitmq.conf", &conf, RABBITMQ_NODES);

    // Every Stevedore process can reach every node.
    for role in STEVEDORE_SERVICES {
        let env = &services[*role]["environment"];
        let urls = amqp_urls(s(env, "/STEVEDORE_AMQP_URL"));
        let hosts: Vec<&str> = urls.iter().map(|u| u.host.as_str()).collect();
        let unique: BTreeSet<String> = hosts.iter().map(|h| h.to_string()).collect();
        assert_eq!(
            hosts.len(),
            unique.len(),
            "compose {role}: a node listed twice: {hosts:?}"
        );
        assert_eq!(
            unique, hostnames,
            "compose {role}: the AMQP URLs must list every node"
        );
        for url in &urls {
            assert_eq!(url.port, 5672, "compose {role}: {url:?}");
            assert_eq!(
                (&url.user, &url.password),
                (&urls[0].user, &urls[0].password),
                "compose {role}: one user for all nodes"
            );
        }
    }
}

/// What a cluster's rabbitmq.conf needs, whichever the peer discovery.
fn check_cluster_settings(what: &str, conf: &[(String, String, String)], nodes: usize) {
    let get = |key: &str| ini_get(conf, "", key).unwrap_or_else(|| panic!("{what}: no {key}"));
    let number = |key: &str| {
        get(key)
            .parse::<usize>()
            .unwrap_or_else(|_| panic!("{what}: {key} is not a number"))
    };
    // Definitions import queues only once every node is there: each quorum
    // queue then starts with a member on every node.
    assert_eq!(
        number("cluster_formation.target_cluster_size_hint"),
        nodes,
        "{what}"
    );
    assert_eq!(number("quorum_queue.initial_cluster_size"), nodes, "{what}");
    // Leaders spread over the nodes, whoever declares the queues.
    assert_eq!(get("queue_leader_locator"), "balanced", "{what}");
    // The worker autoscaler's metric.
    assert_eq!(get("prometheus.return_per_object_metrics"), "true", "{what}");
}

/// Settings of the job queue count other than deploy/stevedore.toml's.
const JOB_QUEUE_OVERRIDES: &[&str] = &["STEVEDORE_BROKER_JOB_QUEUES", "--job-queues"];

#[test]
fn every_role_reads_one_job_queue_count() {
    let n = deploy_job_queues();
    // One leader per node, or the same number on each.
    assert_eq!(
        usize::from(n) % RABBITMQ_NODES,
        0,
        "[broker] job_queues = {n} in deploy/stevedore.toml: not a multiple of the {RABBITMQ_NODES} nodes"
    );
    // Nothing overrides deploy/stevedore.toml (which compose mounts, the
    // ConfigMap copies and the systemd units read): an override in one role
    // only would split the roles over different queues.
    let mut places: Vec<(String, String)> = Vec::new();
    let compose = compose();
    for (name, svc) in compose["services"].as_object().unwrap() {
        places.push((format!("compose {name}"), svc.to_string()));
    }
    for (file, doc) in k8s_docs() {
        places.push((format!("{file} {}", doc["metadata"]["name"]), doc.to_string()));
    }
    for p in walk(&deploy().join("systemd")) {
        places.push((rel(&p), read(&p)));
    }
    for (what, text) in &places {
        for setting in JOB_QUEUE_OVERRIDES {
            // The ConfigMap's copy of stevedore.toml names the variable in a comment.
            if what.starts_with("deploy/k8s/configmap.yaml") {
                continue;
            }
            assert!(
                !text.contains(setting),
                "{what} sets {setting}: the job queue count belongs in deploy/stevedore.toml only"
            );
        }
    }
}

/// The RabbitMQ cluster of deploy/k8s/rabbitmq: its ConfigMap's files.
fn k8s_rabbitmq_config(docs: &[(String, Value)]) -> &Value {
    &find(docs, "ConfigMap", "stevedore-rabbitmq-config")["data"]
}

/// Whether a label selector selects the labels of a pod template.
fn selects(selector: &Value, labels: &Value) -> bool {
    let selector = selector.as_object().expect("a selector");
    !selector.is_empty() && selector.iter().all(|(k, v)| &labels[k] == v)
}

#[test]
fn k8s_rabbitmq_cluster_runs_three_nodes_that_find_each_other() {
    let docs = k8s_docs();
    let sts = find(&docs, "StatefulSet", "stevedore-rabbitmq");
    let what = "StatefulSet stevedore-rabbitmq";
    let spec = &sts["spec"];
    assert_eq!(spec["replicas"].as_u64(), Some(RABBITMQ_NODES as u64), "{what}");
    let labels = &spec["template"]["metadata"]["labels"];
    assert!(
        selects(&spec["selector"]["matchLabels"], labels),
        "{what}: selector"
    );
    // A node restarted with data waits for its peers: they must start together.
    assert_eq!(spec["podManagementPolicy"], "Parallel", "{what}");

    // The headless Service gives the nodes their names and peer discovery its
    // endpoints, ready or not (nodes must find each other to become ready).
    let headless_name = s(spec, "/serviceName");
    let headless = find(&docs, "Service", headless_name);
    assert_eq!(headless["spec"]["clusterIP"], "None", "Service {headless_name}");
    assert_eq!(
        headless["spec"]["publishNotReadyAddresses"], true,
        "Service {headless_name}"
    );
    assert!(
        selects(&headless["spec"]["selector"], labels),
        "Service {headless_name}"
    );

    let pod = &spec["template"]["spec"];
    let c = arr(pod, "/containers")
        .iter()
        .find(|c| c["name"] == "rabbitmq")
        .unwrap_or_else(|| panic!("{what}: no rabbitmq container"));
    let env = |name: &str| {
        container_env(what, c, name)
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(env("K8S_SERVICE_NAME"), headless_name, "{what}");
    assert_eq!(env("RABBITMQ_USE_LONGNAME"), "true", "{what}");
    let suffix = env("K8S_HOSTNAME_SUFFIX");
    assert!(
        suffix.starts_with(".$(K8S_SERVICE_NAME)."),
        "{what}: K8S_HOSTNAME_SUFFIX {suffix}"
    );
    // The name a node gives itself is the one its peers derive from the endpoints.
    assert_eq!(
        env("RABBITMQ_NODENAME"),
        format!("rabbit@$(MY_POD_NAME){suffix}"),
        "{what}"
    );
    let env_list = arr(c, "/env");
    let position = |name: &str| env_list.iter().position(|e| e["name"] == name).unwrap();
    for (name, field) in [
        ("MY_POD_NAME", "metadata.name"),
        ("MY_POD_NAMESPACE", "metadata.namespace"),
    ] {
        let e = &env_list[position(name)];
        assert_eq!(e["valueFrom"]["fieldRef"]["fieldPath"], field, "{what}: {name}");
        // $(VAR) only expands variables defined before.
        assert!(
            position(name) < position("RABBITMQ_NODENAME"),
            "{what}: {name} order"
        );
    }
    assert!(
        position("K8S_SERVICE_NAME") < position("RABBITMQ_NODENAME"),
        "{what}"
    );
    assert_eq!(env("RABBITMQ_SCHEDULER_BUSY_WAIT_THRESHOLD"), "none", "{what}");

    // Peer discovery through the Kubernetes API, with a token allowed to read
    // the endpoints.
    let data = k8s_rabbitmq_config(&docs);
    let conf = ini_text(
        s(data, "/rabbitmq.conf"),
        "k8s/rabbitmq/config.yaml rabbitmq.conf",
    );
    assert!(
        matches!(
            ini_get(&conf, "", "cluster_formation.peer_discovery_backend"),
            Some("k8s" | "kubernetes" | "rabbit_peer_discovery_k8s")
        ),
        "k8s rabbitmq.conf: Kubernetes peer discovery"
    );
    assert_eq!(
        ini_get(&conf, "", "cluster_formation.k8s.address_type"),
        Some("hostname"),
        "k8s rabbitmq.conf: node names from the pods' stable host names, not their IPs"
    );
    check_cluster_settings("k8s rabbitmq.conf", &conf, RABBITMQ_NODES);
    let plugins = s(data, "/enabled_plugins");
    for plugin in [
        "rabbitmq_peer_discovery_k8s",
        "rabbitmq_prometheus",
        "rabbitmq_management",
    ] {
        assert!(plugins.contains(plugin), "k8s enabled_plugins: no {plugin}");
    }
    assert_eq!(
        pod["automountServiceAccountToken"], true,
        "{what}: peer discovery needs the token"
    );
    let account = s(pod, "/serviceAccountName");
    find(&docs, "ServiceAccount", account);
    let binding = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| {
            d["kind"] == "RoleBinding"
                && d["subjects"].as_array().is_some_and(|s| {
                    s.iter()
                        .any(|s| s["kind"] == "ServiceAccount" && s["name"] == account)
                })
        })
        .unwrap_or_else(|| panic!("no RoleBinding for ServiceAccount {account}"));
    let role = find(&docs, "Role", s(binding, "/roleRef/name"));
    assert!(
        arr(role, "/rules").iter().any(|r| {
            strings(&r["resources"]).contains(&"endpoints".to_string())
                && strings(&r["verbs"]).contains(&"get".to_string())
        }),
        "Role {}: peer discovery reads endpoints",
        role["metadata"]["name"]
    );

    // Configuration, definitions and the cookie reach the node.
    let volume = |name: &str| {
        arr(pod, "/volumes")
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("{what}: no volume {name}"))
    };
    let mounts = arr(c, "/volumeMounts");
    for file in ["rabbitmq.conf", "enabled_plugins"] {
        let m = mounts
            .iter()
            .find(|m| m["mountPath"] == format!("/etc/rabbitmq/{file}"))
            .unwrap_or_else(|| panic!("{what}: nothing mounted at /etc/rabbitmq/{file}"));
        assert_eq!(m["subPath"], file, "{what}");
        assert_eq!(
            volume(s(m, "/name"))["configMap"]["name"],
            "stevedore-rabbitmq-config",
            "{what}: /etc/rabbitmq/{file}"
        );
    }
    let definitions_dir = ini_get(&conf, "", "load_definitions").expect("load_definitions");
    let init = &arr(pod, "/initContainers")[0];
    let setup = strings(&init["command"]).join(" ");
    for target in [
        format!("{definitions_dir}/10-topology.json"),
        format!("{definitions_dir}/20-users.json"),
        "/var/lib/rabbitmq/.erlang.cookie".to_string(),
    ] {
        assert!(
            setup.contains(&target),
            "{what}: the init container does not write {target}"
        );
    }
    let secret = &volume("secret")["secret"];
    assert_eq!(secret["secretName"], "stevedore-rabbitmq", "{what}");
    let keys: BTreeSet<String> = arr(secret, "/items")
        .iter()
        .map(|i| s(i, "/key").to_string())
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["erlang-cookie".to_string(), "users.json".to_string()])
    );
    // The directory the definitions are copied to is where both containers see $HOME.
    for container in [init, c] {
        assert!(
            arr(container, "/volumeMounts")
                .iter()
                .any(|m| m["name"] == "home" && m["mountPath"] == "/var/lib/rabbitmq"),
            "{what}: {} does not mount home at /var/lib/rabbitmq",
            container["name"]
        );
    }
    assert!(definitions_dir.starts_with("/var/lib/rabbitmq/"));
    assert!(volume("home")["emptyDir"].is_object(), "{what}: home");

    // Each node keeps its data on a volume of its own.
    let claims = arr(spec, "/volumeClaimTemplates");
    assert_eq!(claims.len(), 1, "{what}");
    let claim = s(&claims[0], "/metadata/name");
    assert!(
        claims[0]["spec"]["resources"]["requests"]["storage"].is_string(),
        "{what}"
    );
    assert!(
        mounts
            .iter()
            .any(|m| m["name"] == claim && m["mountPath"] == "/var/lib/rabbitmq/mnesia"),
        "{what}: the volume claim is not the data directory"
    );
}

#[test]
fn k8s_rabbitmq_pods_are_secure_probed_and_disrupted_one_at_a_time() {
    let docs = k8s_docs();
    let sts = find(&docs, "StatefulSet", "stevedore-rabbitmq");
    let what = "StatefulSet stevedore-rabbitmq";
    let pod = &sts["spec"]["template"]["spec"];
    let labels = &sts["spec"]["template"]["metadata"]["labels"];

    // Pod Security "restricted", like the namespace enforces.
    let sc = &pod["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "{what}");
    assert!(
        sc["runAsUser"].as_u64().is_some_and(|u| u != 0),
        "{what}: runAsUser"
    );
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
    let containers: Vec<&Value> = arr(pod, "/initContainers")
        .iter()
        .chain(arr(pod, "/containers").iter())
        .collect();
    for c in &containers {
        let name = format!("{what} {}", c["name"]);
        assert!(s(c, "/image").starts_with("rabbitmq:3.12-management"), "{name}");
        let csc = &c["securityContext"];
        assert_eq!(csc["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(csc["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(csc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{name}");
        for r in ["cpu", "memory"] {
            assert!(c["resources"]["requests"][r].is_string(), "{name}: requests.{r}");
        }
        assert!(
            c["resources"]["limits"]["memory"].is_string(),
            "{name}: memory limit"
        );
    }
    let c = containers.last().unwrap();
    assert!(c["readinessProbe"].is_object(), "{what}: readinessProbe");
    assert!(c["livenessProbe"].is_object(), "{what}: livenessProbe");
    assert_eq!(c["readinessProbe"]["tcpSocket"]["port"], "amqp", "{what}");
    // RabbitMQ sizes its memory alarm from this, not from the container's limit.
    let conf = ini_text(
        s(k8s_rabbitmq_config(&docs), "/rabbitmq.conf"),
        "k8s/rabbitmq/config.yaml rabbitmq.conf",
    );
    let memory = bytes(ini_get(&conf, "", "total_memory_available_override_value").expect("memory override"));
    let limit = bytes(s(c, "/resources/limits/memory"));
    assert!(
        memory < limit && memory * 10 >= limit * 7,
        "{what}: total_memory_available_override_value ({memory}) should be 70-100 % of the memory limit ({limit})"
    );

    // One node at a time: two keep every quorum queue's majority.
    let pdb = find(&docs, "PodDisruptionBudget", "stevedore-rabbitmq");
    assert_eq!(
        pdb["spec"]["maxUnavailable"], 1,
        "PodDisruptionBudget stevedore-rabbitmq"
    );
    assert!(
        selects(&pdb["spec"]["selector"]["matchLabels"], labels),
        "PodDisruptionBudget selector"
    );

    // The client Service reaches AMQP on any ready node.
    let svc = find(&docs, "Service", "stevedore-rabbitmq");
    assert!(
        selects(&svc["spec"]["selector"], labels),
        "Service stevedore-rabbitmq"
    );
    assert!(
        arr(&svc["spec"], "/ports")
            .iter()
            .any(|p| p["port"] == 5672 && p["targetPort"] == "amqp"),
        "Service stevedore-rabbitmq: amqp"
    );
    assert!(
        arr(c, "/ports")
            .iter()
            .any(|p| p["name"] == "amqp" && p["containerPort"] == 5672),
        "{what}: amqp port"
    );
}

#[test]
fn k8s_rabbitmq_cluster_has_the_compose_topology_and_stevedore_its_urls() {
    let docs = k8s_docs();
    let compose_conf = ini(&deploy().join("rabbitmq/rabbitmq.conf"));
    let data = k8s_rabbitmq_config(&docs);
    let k8s_conf = ini_text(
        s(data, "/rabbitmq.conf"),
        "k8s/rabbitmq/config.yaml rabbitmq.conf",
    );
    // The compose file's settings, but for how nodes find each other and
    // where the definitions are.
    for (_, key, value) in &compose_conf {
        if key == "load_definitions"
            || key == "cluster_formation.peer_discovery_backend"
            || key.starts_with("cluster_formation.classic_config.")
        {
            continue;
        }
        assert_eq!(
            ini_get(&k8s_conf, "", key),
            Some(value.as_str()),
            "k8s/rabbitmq/config.yaml: {key} differs from deploy/rabbitmq/rabbitmq.conf"
        );
    }

    // The topology of definitions.json (all job queues); its users come from
    // the Secret instead.
    let mut compose_defs = json_file(&deploy().join("rabbitmq/definitions.json"));
    let compose_permissions = compose_defs["permissions"].clone();
    let defs = compose_defs.as_object_mut().unwrap();
    defs.remove("users");
    defs.remove("permissions");
    let k8s_defs: Value = serde_json::from_str(s(data, "/definitions.json")).expect("k8s definitions.json");
    assert_eq!(
        &k8s_defs,
        &compose_defs,
        "k8s/rabbitmq/config.yaml definitions.json is not deploy/rabbitmq/definitions.json without users and permissions"
    );

    // The example Secrets: the users, and Stevedore's URL list naming every node.
    let examples = yaml_docs(&deploy().join("k8s/rabbitmq/secret.example.yaml"));
    let secret = |name: &str| {
        examples
            .iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("k8s/rabbitmq/secret.example.yaml: no {name}"))
    };
    let users: Value = serde_json::from_str(s(secret("stevedore-rabbitmq"), "/stringData/users.json"))
        .expect("users.json of the example parses");
    for u in arr(&users, "/users") {
        assert!(
            u["password"].as_str().is_some_and(|p| p.contains("CHANGE_ME")),
            "users.json: user {} needs a placeholder password",
            u["name"]
        );
    }
    let sts = find(&docs, "StatefulSet", "stevedore-rabbitmq");
    let replicas = sts["spec"]["replicas"].as_u64().unwrap();
    let nodes: BTreeSet<String> = (0..replicas)
        .map(|i| format!("stevedore-rabbitmq-{i}.{}", s(sts, "/spec/serviceName")))
        .collect();
    let urls = amqp_urls(s(secret("stevedore-secrets"), "/stringData/STEVEDORE_AMQP_URL"));
    let hosts: BTreeSet<String> = urls.iter().map(|u| u.host.clone()).collect();
    assert_eq!(hosts, nodes, "the example URL list must name every node");
    assert_eq!(urls.len(), nodes.len(), "a node listed twice");
    for url in &urls {
        assert_eq!((url.port, url.vhost.as_str()), (5672, "%2f"), "{url:?}");
        let user = arr(&users, "/users")
            .iter()
            .find(|u| u["name"] == url.user.as_str())
            .unwrap_or_else(|| panic!("users.json: no user {}", url.user));
        assert_eq!(
            user["password"],
            url.password.as_str(),
            "the URL's password is not {}'s",
            url.user
        );
        // Allowed on the vhost what the compose user is allowed.
        let perms = |list: &Value| -> Vec<Value> {
            list.as_array()
                .unwrap()
                .iter()
                .filter(|p| p["user"] == url.user.as_str())
                .cloned()
                .collect()
        };
        assert_eq!(
            perms(&users["permissions"]),
            perms(&compose_permissions),
            "permissions of {}",
            url.user
        );
        assert!(!perms(&compose_permissions).is_empty());
    }
}

#[test]
fn systemd_units_run_stevedore_hardened() {
    let dir = deploy().join("systemd");
    let units: Vec<PathBuf> = walk(&dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    let names: BTreeSet<String> = units
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "stevedore-api.service".to_string(),
            "stevedore-stream.service".to_string(),
            "stevedore-worker@.service".to_string(),
        ])
    );
    for p in &units {
        let file = rel(p);
        let unit = ini(p);
        let role = p
            .file_stem()
            .unwrap()
            .to_str()
            .unwrap()
            .trim_start_matches("stevedore-")
            .trim_end_matches('@');
        let get = |key: &str| {
            ini_get(&unit, "Service", key).unwrap_or_else(|| panic!("{file}: [Service] has no {key}"))
        };
        let exec: Vec<&str> = get("ExecStart").split_whitespace().collect();
        assert!(
            exec[0].starts_with('/') && exec[0].ends_with("/stevedore"),
            "{file}: ExecStart must run stevedore by absolute path: {exec:?}"
        );
        assert_eq!(exec.get(1).copied(), Some(role), "{file}: ExecStart role");
        if role == "worker" {
            // The worker's ops listener needs its own address per instance:
            // STEVEDORE_LISTEN in the shared environment file is the API's.
            let listen = exec
                .iter()
                .position(|a| *a == "--listen")
                .and_then(|i| exec.get(i + 1))
                .unwrap_or_else(|| panic!("{file}: the worker needs --listen for its probes"));
            assert!(
                listen.contains("%i"),
                "{file}: --listen {listen} is not per instance"
            );
        }
        assert_eq!(get("EnvironmentFile"), "/etc/stevedore/env", "{file}");
        assert_eq!(get("Restart"), "on-failure", "{file}");
        assert_eq!(get("KillSignal"), "SIGTERM", "{file}");
        let stop: u64 = get("TimeoutStopSec").parse().expect("TimeoutStopSec in seconds");
        assert!(stop >= worker_stop_needs(), "{file}: TimeoutStopSec");
        assert_eq!(get("NoNewPrivileges"), "yes", "{file}");
        assert_eq!(get("ProtectSystem"), "strict", "{file}");
        assert_eq!(get("PrivateTmp"), "yes", "{file}");
        assert!(
            ini_get(&unit, "Service", "DynamicUser") == Some("yes")
                || ini_get(&unit, "Service", "User").is_some_and(|u| u != "root"),
            "{file}: runs as root"
        );
        let config = format!("STEVEDORE_CONFIG={CONFIG_PATH}");
        assert!(
            unit.iter()
                .any(|(s, k, v)| s == "Service" && k == "Environment" && *v == config),
            "{file}: Environment={config}"
        );
        assert!(ini_get(&unit, "Unit", "Description").is_some(), "{file}");
        assert_eq!(
            ini_get(&unit, "Install", "WantedBy"),
            Some("multi-user.target"),
            "{file}"
        );
    }

    let env = ini(&dir.join("env.example"));
    for (section, key, value) in &env {
        assert!(section.is_empty(), "env.example: sections are not allowed");
        assert!(
            key.starts_with("STEVEDORE_") || key == "RUST_LOG",
            "env.example: unexpected {key}"
        );
        if key.ends_with("_URL") {
            assert!(
                value.contains("CHANGE_ME"),
                "env.example: {key} must be a placeholder"
            );
        }
    }
    for key in ["STEVEDORE_DATABASE_URL", "STEVEDORE_AMQP_URL"] {
        assert!(ini_get(&env, "", key).is_some(), "env.example: no {key}");
    }
}

#[test]
fn dockerfile_builds_every_workspace_crate_and_runs_unprivileged() {
    let dockerfile = read(&deploy().join("Dockerfile"));
    let manifest: toml::Table = toml::from_str(&read(&root().join("Cargo.toml"))).unwrap();
    let members = manifest["workspace"]["members"].as_array().unwrap();
    // A crate added to the workspace must be added to both stages of the
    // Dockerfile, or the image build fails (or caches nothing).
    for m in members {
        let m = m.as_str().unwrap();
        for needle in [
            format!("COPY {m}/Cargo.toml {m}/Cargo.toml"),
            format!("COPY {m} {m}\n"),
        ] {
            assert!(dockerfile.contains(&needle), "deploy/Dockerfile lacks `{needle}`");
        }
    }
    for needle in [
        "FROM rust:1-bookworm AS builder",
        "FROM debian:bookworm-slim",
        "cargo build --release --locked",
        "COPY migrations migrations",
        "COPY stevedore.example.toml",
        "--uid 10001",
        "USER 10001:10001",
        "EXPOSE 8080",
        "STEVEDORE_LISTEN=0.0.0.0:8080",
        "ca-certificates",
        "tini",
    ] {
        assert!(dockerfile.contains(needle), "deploy/Dockerfile lacks `{needle}`");
    }
    let entrypoint = dockerfile
        .lines()
        .find(|l| l.starts_with("ENTRYPOINT "))
        .expect("ENTRYPOINT");
    let entrypoint: Vec<String> =
        serde_json::from_str(entrypoint.trim_start_matches("ENTRYPOINT ")).expect("exec-form ENTRYPOINT");
    assert_eq!(entrypoint.last().map(String::as_str), Some("stevedore"));

    let ignore = read(&root().join(".dockerignore"));
    assert!(
        ignore
            .lines()
            .any(|l| l.trim() == "target/" || l.trim() == "target"),
        ".dockerignore must keep target/ out of the build context"
    );
}
