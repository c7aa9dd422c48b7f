//! `list`: the action list over a seeded table, with queues of Pending
//! actions (their places cost one more query per page).

use crate::rig::{percentiles, Rig};
use anyhow::Result;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::time::Instant;

/// Seeds `actions` actions and times `requests` list requests per query shape.
pub async fn list(actions: i64, requests: usize) -> Result<Value> {
    let rig = Rig::start(0).await?;
    let pool = sqlx::PgPool::connect(rig.db.url()).await?;
    eprintln!("seeding {actions} actions…");
    let t = Instant::now();
    // 10,000 objects in 1,000 stacks; actions spread over a year, mostly final.
    sqlx::query(
        "INSERT INTO objects (uuid, namespace, object_type, resource_uri, name, state, parents, attributes, created_at, updated_at) \
         SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, 'bench', \
                CASE WHEN i % 10 = 0 THEN 'stack' ELSE 'service' END, \
                '/api/app/v1/bench/' || CASE WHEN i % 10 = 0 THEN 'stack' ELSE 'service' END || '/00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0') || '/', \
                'o' || i, 'Running', \
                CASE WHEN i % 10 = 0 THEN '[]'::jsonb ELSE jsonb_build_array('/api/app/v1/bench/stack/00000000-0000-4000-8000-' || lpad(to_hex(i - i % 10), 12, '0') || '/') END, \
                '{}', now(), now() \
         FROM generate_series(0, 9999) AS i",
    )
    .execute(&pool)
    .await?;
    sqlx::query(
        "INSERT INTO actions (uuid, namespace, action, object, object_uuid, object_type, object_parents, verb, method, path, body, \
                              ip, location, user_name, user_agent, is_user_action, state, start_date, end_date, claims) \
         SELECT gen_random_uuid(), CASE WHEN i % 20 = 0 THEN 'other' ELSE 'bench' END, 'Service Noop', \
                '/api/app/v1/bench/service/00000000-0000-4000-8000-' || lpad(to_hex(i % 10000), 12, '0') || '/', \
                ('00000000-0000-4000-8000-' || lpad(to_hex(i % 10000), 12, '0'))::uuid, 'service', '[]', 'noop', 'POST', '/', '', \
                '127.0.0.1', '', 'bench', 'bench', true, \
                (ARRAY['Success','Success','Success','Failed','Canceled'])[1 + i % 5], \
                now() - ((1000000 - i) * interval '30 seconds'), now() - ((1000000 - i) * interval '30 seconds') + interval '5 seconds', 1 \
         FROM generate_series(1, $1) AS i",
    )
    .bind(actions)
    .execute(&pool)
    .await?;
    let queues = seed_queues(&pool, actions).await?;
    sqlx::query("ANALYZE").execute(&pool).await?;
    let seed_seconds = t.elapsed().as_secs_f64();
    eprintln!("seeded in {seed_seconds:.1}s");
    let some_uuid: String =
        sqlx::query_scalar("SELECT uuid::text FROM actions WHERE namespace = 'bench' LIMIT 1 OFFSET 1000")
            .fetch_one(&pool)
            .await?;
    let svc = "/api/app/v1/bench/service/00000000-0000-4000-8000-000000000007/";
    let stack = "/api/app/v1/bench/stack/00000000-0000-4000-8000-000000000000/";
    let shapes: Vec<(&str, String)> = vec![
        ("no filter (first page)", String::new()),
        ("state=Failed", "state=Failed".into()),
        ("uuid", format!("uuid={some_uuid}")),
        (
            "uuid__startswith (8 chars)",
            format!("uuid__startswith={}", &some_uuid[..8]),
        ),
        ("object", format!("object={svc}")),
        (
            "object + include_related (stack)",
            format!("object={stack}&include_related=true"),
        ),
        (
            "start_date window (1 day)",
            "start_date__gte=2026-01-01T00:00:00Z&start_date__lte=2026-01-02T00:00:00Z".into(),
        ),
        ("deep page (offset 100000)", "offset=100000".into()),
        // Queue places: one more query per page, for its Pending actions.
        ("state=Pending (places in 25 queues)", "state=Pending".into()),
        (
            "object with the long queue (places)",
            format!("object={LONG_QUEUE_OBJECT}"),
        ),
    ];
    let mut shapes: Vec<(String, String)> = shapes
        .into_iter()
        .map(|(name, q)| (name.to_string(), format!("?{q}")))
        .collect();
    shapes.push((
        format!("detail, {} in the long queue", queues.deep_position),
        format!("{}/", queues.deep_action),
    ));
    let http = rig.client();
    let mut results = vec![];
    for (name, q) in shapes {
        let mut h = Histogram::<u64>::new(3)?;
        let mut total = 0;
        for _ in 0..requests {
            let t = Instant::now();
            let v: Value = http
                .get(format!("{}/api/audit/v1/action/{q}", rig.url))
                .basic_auth(&rig.auth.0, Some(&rig.auth.1))
                .send()
                .await?
                .json()
                .await?;
            h.record(t.elapsed().as_micros() as u64)?;
            total = v["meta"]["total_count"]
                .as_i64()
                .or(v["queue_position"].as_i64())
                .unwrap_or(-1);
        }
        eprintln!("{name}: p50 {:.1} ms", h.value_at_quantile(0.5) as f64 / 1000.0);
        results.push(json!({ "query": name, "total_count": total, "latency": percentiles(&h) }));
    }
    pool.close().await;
    rig.stop().await;
    Ok(
        json!({ "scenario": "list", "actions": actions, "waiting": queues.waiting, "long_queue": queues.long, "requests_per_query": requests, "seed_seconds": seed_seconds, "queries": results }),
    )
}

/// The object whose queue is long (a service of the seeded objects).
const LONG_QUEUE_OBJECT: &str = "/api/app/v1/bench/service/00000000-0000-4000-8000-000000002709/";

/// What [`seed_queues`] made.
struct Queues {
    /// Pending actions in all.
    waiting: i64,
    /// Pending actions behind the long queue's holder.
    long: i64,
    /// An action half-way down the long queue, and its position.
    deep_action: String,
    deep_position: i64,
}

/// Objects that are busy, with actions waiting behind them (newer than the
/// finished ones): a queue of `actions / 100` (at most 10,000) on
/// [`LONG_QUEUE_OBJECT`], then up to 1,000 services with 20 each. Each
/// holder (In progress, never dispatched: the rig has no worker) comes
/// before its queue, as promotion keeps it.
async fn seed_queues(pool: &sqlx::PgPool, actions: i64) -> Result<Queues> {
    let long = (actions / 100).clamp(20, 10_000);
    let short_queues = (actions / 1000).clamp(1, 1000);
    let insert = |objects: &str| {
        format!(
            "INSERT INTO actions (uuid, namespace, action, object, object_uuid, object_type, object_parents, verb, \
                                  method, path, body, ip, location, user_name, user_agent, is_user_action, state, \
                                  start_date, claims) \
             SELECT gen_random_uuid(), 'bench', 'Service Noop', \
                    '/api/app/v1/bench/service/00000000-0000-4000-8000-' || lpad(to_hex(o), 12, '0') || '/', \
                    ('00000000-0000-4000-8000-' || lpad(to_hex(o), 12, '0'))::uuid, 'service', '[]', 'noop', 'POST', \
                    '/', '', '127.0.0.1', '', 'bench', 'bench', true, \
                    CASE WHEN k = 0 THEN 'In progress' ELSE 'Pending' END, now(), 0 \
             FROM ({objects}) AS q ORDER BY k, o"
        )
    };
    sqlx::query(&insert("SELECT 9993 AS o, k FROM generate_series(0, $1) AS k"))
        .bind(long)
        .execute(pool)
        .await?;
    sqlx::query(&insert(
        "SELECT o * 10 + 1 AS o, k FROM generate_series(0, $1 - 1) AS o, generate_series(0, 20) AS k",
    ))
    .bind(short_queues)
    .execute(pool)
    .await?;
    let deep_position = long / 2;
    let deep_action: String = sqlx::query_scalar(
        "SELECT uuid::text FROM actions \
         WHERE object_uuid = '00000000-0000-4000-8000-000000002709' AND state = 'Pending' \
         ORDER BY id OFFSET $1 - 1 LIMIT 1",
    )
    .bind(deep_position)
    .fetch_one(pool)
    .await?;
    Ok(Queues {
        waiting: long + short_queues * 20,
        long,
        deep_action,
        deep_position,
    })
}
