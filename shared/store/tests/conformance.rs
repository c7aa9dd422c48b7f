//! The one conformance suite every `Store` backend must pass.
//!
//! Each case is a plain `async fn` over `&dyn Store`; the `conformance!` macro
//! at the bottom instantiates all of them once per backend, as
//! `postgres::<case>` and `sqlite::<case>`. PostgreSQL cases each get a fresh
//! database (dropped afterwards); SQLite cases a fresh file in a temporary
//! directory.

use std::any::Any;
use std::sync::Arc;
use stevedore_core::store::prelude::*;

use stevedore_core::store::DynStore;
use stevedore_core::testing::TestDatabase;
use stevedore_store::postgres::PgStore;
use stevedore_store::sqlite::SqliteStore;

/// A migrated store and whatever must outlive it (its database or directory).
struct Harness {
    store: DynStore,
    _keep: Box<dyn Any + Send>,
}

async fn pg_store() -> Harness {
    let db = TestDatabase::create().await;
    let store = PgStore::connect(db.url()).await.expect("connect");
    store.migrate().await.expect("migrate");
    Harness {
        store: Arc::new(store),
        _keep: Box::new(db),
    }
}

async fn sqlite_store() -> Harness {
    let dir = tempfile::tempdir().expect("temporary directory");
    let url = format!("sqlite://{}", dir.path().join("store.db").display());
    let store = SqliteStore::connect(&url).await.expect("connect");
    store.migrate().await.expect("migrate");
    Harness {
        store: Arc::new(store),
        _keep: Box::new(dir),
    }
}

mod cases {
    use chrono::{SubsecRound, Utc};
    use futures::future::join_all;
    use std::time::Duration;
    use stevedore_core::action::{action_uri, NewAction, QueuePlace};
    use stevedore_core::event::EventKind;
    use stevedore_core::lifecycle::engine::{ObjectChanged, ObjectRequest};
    use stevedore_core::lifecycle::{ObjectChange, ObjectPatch};
    use stevedore_core::logline::{NewLogLine, StreamType};
    use stevedore_core::object::Object;
    use stevedore_core::state::{ActionState, IllegalTransition};
    use stevedore_core::store::{Finish, LeaseToken, ObjectLookup, Scope, Store, Submission};
    use stevedore_core::workers::NewWorker;
    use stevedore_core::Error;
    use uuid::Uuid;

    use ActionState::*;

    /// A lease long enough never to expire during a test.
    const LONG_LEASE: Duration = Duration::from_secs(600);
    /// A lease short enough to wait out.
    const SHORT_LEASE: Duration = Duration::from_secs(1);
    /// Longer than [`SHORT_LEASE`], with a margin for slow machines.
    const PAST_SHORT_LEASE: Duration = Duration::from_millis(1300);

    fn object_uri(namespace: &str, uuid: Uuid) -> String {
        format!("/api/app/v1/{namespace}/service/{uuid}/")
    }

    fn new_action(namespace: &str, object: Uuid) -> NewAction {
        NewAction {
            uuid: Uuid::new_v4(),
            namespace: namespace.to_string(),
            action: "Service Start".to_string(),
            object: object_uri(namespace, object),
            object_uuid: object,
            object_type: "service".to_string(),
            object_parents: vec![format!("/api/app/v1/{namespace}/stack/{}/", Uuid::nil())],
            verb: "start".to_string(),
            method: "POST".to_string(),
            path: format!("/api/app/v1/{namespace}/service/{object}/start/"),
            body: String::new(),
            ip: "127.0.0.1".to_string(),
            location: String::new(),
            user: namespace.to_string(),
            user_agent: "conformance".to_string(),
            is_user_action: true,
            retry_of: None,
            completed: None,
        }
    }

    fn object(namespace: &str) -> Object {
        let uuid = Uuid::new_v4();
        // Both backends keep microseconds.
        let now = Utc::now().trunc_subsecs(6);
        Object {
            uuid,
            namespace: namespace.to_string(),
            object_type: "service".to_string(),
            resource_uri: object_uri(namespace, uuid),
            name: "web".to_string(),
            state: "Running".to_string(),
            parents: vec![format!("/api/app/v1/{namespace}/stack/{}/", Uuid::nil())],
            attributes: serde_json::json!({"image": "nginx", "ports": [80, 443]}),
            created_at: now,
            updated_at: now,
            deleted_at: None,
        }
    }

    fn lines(texts: &[&str]) -> Vec<NewLogLine> {
        texts
            .iter()
            .map(|t| NewLogLine {
                log: t.to_string(),
                timestamp: 1_700_000_000,
                stream: StreamType::Stdout,
            })
            .collect()
    }

    /// Outbox rows waiting for an action.
    async fn outbox_rows(store: &dyn Store, action: Uuid) -> Vec<i64> {
        store
            .unsent_outbox(Duration::ZERO, 10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.action_uuid == action)
            .map(|e| e.id)
            .collect()
    }

    async fn state_of(store: &dyn Store, action: Uuid) -> ActionState {
        store
            .get_action(Scope::All, action)
            .await
            .unwrap()
            .expect("action exists")
            .state
    }

    // --- tenancy ---------------------------------------------------------

    pub async fn users_and_api_keys_round_trip(store: &dyn Store) {
        let user = store
            .create_user("ann", &["acme".into(), "ann".into(), "labs".into()])
            .await
            .unwrap();
        assert_eq!(user.namespaces, vec!["ann", "acme", "labs"]);
        assert_eq!(store.get_user("ann").await.unwrap(), Some(user.clone()));
        assert_eq!(store.get_user("bob").await.unwrap(), None);

        let first = store.add_api_key("ann", "digest-1").await.unwrap();
        let second = store.add_api_key("ann", "digest-2").await.unwrap();
        assert!(second > first, "ids grow: {first} {second}");
        let (found, keys) = store.credentials("ann").await.unwrap().unwrap();
        assert_eq!(found, user);
        let digests: Vec<&str> = keys.iter().map(|k| k.digest.as_str()).collect();
        assert_eq!(digests, vec!["digest-1", "digest-2"]);
        assert_eq!(keys.iter().map(|k| k.id).collect::<Vec<_>>(), vec![first, second]);
        assert!(store.credentials("bob").await.unwrap().is_none());
    }

    pub async fn creating_an_existing_user_is_a_conflict(store: &dyn Store) {
        store.create_user("ann", &[]).await.unwrap();
        let err = store.create_user("ann", &["acme".into()]).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        assert_eq!(
            store.get_user("ann").await.unwrap().unwrap().namespaces,
            vec!["ann"]
        );
    }

    pub async fn api_keys_need_an_existing_user_and_a_unique_digest(store: &dyn Store) {
        let err = store.add_api_key("nobody", "d").await.unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
        store.create_user("ann", &[]).await.unwrap();
        store.add_api_key("ann", "d").await.unwrap();
        let err = store.add_api_key("ann", "d").await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    }

    // --- objects ---------------------------------------------------------

    pub async fn objects_are_visible_only_in_their_namespaces(store: &dyn Store) {
        let obj = object("acme");
        store.insert_object(&obj).await.unwrap();
        let acme = ["acme".to_string()];
        let other = ["other".to_string()];
        assert_eq!(
            store.get_object(Scope::All, obj.uuid).await.unwrap(),
            Some(obj.clone())
        );
        assert_eq!(
            store
                .get_object(Scope::Namespaces(&acme), obj.uuid)
                .await
                .unwrap(),
            Some(obj.clone())
        );
        assert_eq!(
            store
                .get_object(Scope::Namespaces(&other), obj.uuid)
                .await
                .unwrap(),
            None
        );
        assert_eq!(store.get_object(Scope::All, Uuid::new_v4()).await.unwrap(), None);
        let err = store.insert_object(&obj).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    }

    // --- submitting ------------------------------------------------------

    pub async fn submit_on_an_idle_object_dispatches_it(store: &dyn Store) {
        let new = new_action("acme", Uuid::new_v4());
        let s = store.submit_action(new.clone()).await.unwrap();
        assert_eq!(s.action.state, InProgress);
        assert_eq!(s.action.uuid, new.uuid);
        assert_eq!(s.action.claims, 0);
        assert!(s.action.start_date.is_some());
        assert!(s.action.end_date.is_none());
        let outbox_id = s.outbox_id.expect("an outbox row");
        assert_eq!(outbox_rows(store, new.uuid).await, vec![outbox_id]);

        assert_eq!(s.event.action, EventKind::Create);
        assert_eq!(s.event.object_type, "action");
        assert_eq!(s.event.uuid, new.uuid.to_string());
        assert_eq!(s.event.resource_uri, action_uri(&new.uuid));
        assert_eq!(s.event.state, "In progress");
        assert_eq!(s.event.namespace, "acme");
        let mut parents = vec![new.object.clone()];
        parents.extend(new.object_parents.clone());
        assert_eq!(s.event.parents, parents);
        assert!(s.event.seq > 0);

        assert_eq!(
            store.get_action(Scope::All, new.uuid).await.unwrap(),
            Some(s.action.clone())
        );
        let events = store.events_after(Scope::All, 0, 100).await.unwrap();
        assert_eq!(events, vec![s.event]);
    }

    pub async fn submit_on_a_busy_object_waits_as_pending(store: &dyn Store) {
        let object = Uuid::new_v4();
        let first = store.submit_action(new_action("acme", object)).await.unwrap();
        let second = store.submit_action(new_action("acme", object)).await.unwrap();
        assert_eq!(first.action.state, InProgress);
        assert_eq!(second.action.state, Pending);
        assert_eq!(second.outbox_id, None);
        assert_eq!(second.event.state, "Pending");
        assert!(outbox_rows(store, second.action.uuid).await.is_empty());

        // Another object is not affected.
        let other = store
            .submit_action(new_action("acme", Uuid::new_v4()))
            .await
            .unwrap();
        assert_eq!(other.action.state, InProgress);
    }

    pub async fn concurrent_submits_on_one_object_start_exactly_one(store: &dyn Store) {
        let object = Uuid::new_v4();
        let results = join_all((0..20).map(|_| store.submit_action(new_action("acme", object)))).await;
        let states: Vec<ActionState> = results
            .into_iter()
            .map(|r| r.expect("submit").action.state)
            .collect();
        assert_eq!(states.iter().filter(|s| **s == InProgress).count(), 1);
        assert_eq!(states.iter().filter(|s| **s == Pending).count(), 19);
        let outbox = store.unsent_outbox(Duration::ZERO, 100).await.unwrap();
        assert_eq!(outbox.len(), 1);
    }

    pub async fn a_submitted_uuid_cannot_be_reused(store: &dyn Store) {
        let new = new_action("acme", Uuid::new_v4());
        store.submit_action(new.clone()).await.unwrap();
        let err = store.submit_action(new).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
    }

    pub async fn completed_submissions_are_recorded_final_without_dispatch(store: &dyn Store) {
        let object = Uuid::new_v4();
        let running = store.submit_action(new_action("acme", object)).await.unwrap();
        let mut new = new_action("acme", object);
        new.completed = Some(Success);
        let done = store.submit_action(new.clone()).await.unwrap();
        assert_eq!(done.action.state, Success);
        assert_eq!(done.outbox_id, None);
        assert!(done.action.start_date.is_some());
        assert_eq!(done.action.start_date, done.action.end_date);
        assert_eq!(done.event.action, EventKind::Create);
        assert_eq!(done.event.state, "Success");
        assert!(outbox_rows(store, new.uuid).await.is_empty());
        // It does not occupy the object.
        assert_eq!(state_of(store, running.action.uuid).await, InProgress);

        let mut bad = new_action("acme", object);
        bad.completed = Some(Pending);
        let err = store.submit_action(bad).await.unwrap_err();
        assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    }

    // --- transitions -----------------------------------------------------

    pub async fn finishing_an_action_promotes_the_oldest_pending_one(store: &dyn Store) {
        let object = Uuid::new_v4();
        let first = store.submit_action(new_action("acme", object)).await.unwrap();
        let second = store.submit_action(new_action("acme", object)).await.unwrap();
        let third = store.submit_action(new_action("acme", object)).await.unwrap();
        let claim = store
            .claim_action(first.action.uuid, "w1", LONG_LEASE)
            .await
            .unwrap()
            .unwrap();

        let done = store
            .transition(Scope::All, first.action.uuid, Success, Some(claim.token))
            .await
            .unwrap();
        assert_eq!(done.action.state, Success);
        assert!(done.action.end_date.is_some());
        assert_eq!(done.event.action, EventKind::Update);
        assert_eq!(done.event.state, "Success");

        let promoted = done.promoted.expect("the oldest Pending action is promoted");
        assert_eq!(promoted.action.uuid, second.action.uuid);
        assert_eq!(promoted.action.state, InProgress);
        assert_eq!(promoted.event.action, EventKind::Update);
        assert_eq!(promoted.event.state, "In progress");
        assert_eq!(promoted.event.uuid, second.action.uuid.to_string());
        assert!(promoted.event.seq > done.event.seq);
        let outbox_id = promoted.outbox_id.expect("an outbox row");
        assert_eq!(outbox_rows(store, second.action.uuid).await, vec![outbox_id]);
        assert_eq!(state_of(store, third.action.uuid).await, Pending);

        // The lease was cleared: the finished action cannot be claimed or fenced.
        assert_eq!(
            store
                .heartbeat(first.action.uuid, claim.token, LONG_LEASE)
                .await
                .unwrap(),
            None
        );

        let events = store
            .events_after(Scope::All, first.event.seq, 100)
            .await
            .unwrap();
        let seen: Vec<(String, String)> = events.iter().map(|e| (e.uuid.clone(), e.state.clone())).collect();
        assert_eq!(
            seen,
            vec![
                (second.action.uuid.to_string(), "Pending".to_string()),
                (third.action.uuid.to_string(), "Pending".to_string()),
                (first.action.uuid.to_string(), "Success".to_string()),
                (second.action.uuid.to_string(), "In progress".to_string()),
                // The queue moved: the first still waiting moved up.
                (third.action.uuid.to_string(), "Pending".to_string()),
            ]
        );
    }

    // --- queue places ----------------------------------------------------

    pub async fn queue_places_number_each_objects_waiting_actions(store: &dyn Store) {
        let object = Uuid::new_v4();
        let other = Uuid::new_v4();
        let mut on_object = Vec::new();
        for _ in 0..4 {
            on_object.push(
                store
                    .submit_action(new_action("acme", object))
                    .await
                    .unwrap()
                    .action,
            );
        }
        let a = store
            .submit_action(new_action("acme", other))
            .await
            .unwrap()
            .action;
        let b = store
            .submit_action(new_action("acme", other))
            .await
            .unwrap()
            .action;
        // A finished action of the object's history counts for nothing.
        let mut done = new_action("acme", object);
        done.completed = Some(Success);
        store.submit_action(done).await.unwrap();
        let [first, second, third, fourth] = [0, 1, 2, 3].map(|i| on_object[i].uuid);
        let all = [first, second, third, fourth, a.uuid, b.uuid];
        let place = |position, waiting_for| QueuePlace {
            position,
            waiting_for: Some(waiting_for),
        };

        let places = store.queue_places(Scope::All, &all).await.unwrap();
        assert_eq!(places.len(), 4, "only the Pending ones: {places:?}");
        assert_eq!(places[&second], place(1, first));
        assert_eq!(places[&third], place(2, second));
        assert_eq!(places[&fourth], place(3, third));
        assert_eq!(places[&b.uuid], place(1, a.uuid));
        // A page holding only some of a queue: each still counts all ahead.
        let page = store.queue_places(Scope::All, &[fourth]).await.unwrap();
        assert_eq!(page[&fourth], place(3, third));
        // Scoped: another tenant sees none of them; nothing asked, nothing read.
        let others = ["other".to_string()];
        assert!(store
            .queue_places(Scope::Namespaces(&others), &all)
            .await
            .unwrap()
            .is_empty());
        let acme = ["acme".to_string()];
        assert_eq!(
            store.queue_places(Scope::Namespaces(&acme), &all).await.unwrap(),
            places
        );
        assert!(store.queue_places(Scope::All, &[]).await.unwrap().is_empty());

        // A cancel while waiting moves those behind up, with one event for
        // the first of them.
        let canceled = store.cancel(Scope::All, second).await.unwrap();
        assert_eq!(canceled.action.state, Canceled);
        let moved = canceled.queue_moved.expect("the queue moved");
        assert_eq!(
            (moved.uuid.as_str(), moved.state.as_str(), moved.action),
            (third.to_string().as_str(), "Pending", EventKind::Update)
        );
        assert!(moved.seq > canceled.event.seq);
        let places = store.queue_places(Scope::All, &all).await.unwrap();
        assert_eq!(places[&third], place(1, first));
        assert_eq!(places[&fourth], place(2, third));
        assert_eq!(places[&b.uuid], place(1, a.uuid), "another object's queue stays");

        // A promotion moves the rest up too.
        let claim = store
            .claim_action(first, "w1", LONG_LEASE)
            .await
            .unwrap()
            .unwrap();
        let finished = store
            .transition(Scope::All, first, Success, Some(claim.token))
            .await
            .unwrap();
        assert_eq!(finished.promoted.as_ref().unwrap().action.uuid, third);
        let moved = finished.queue_moved.expect("the queue moved");
        assert_eq!(moved.uuid, fourth.to_string());
        assert!(moved.seq > finished.promoted.unwrap().event.seq);
        let places = store.queue_places(Scope::All, &all).await.unwrap();
        assert_eq!(places.len(), 2);
        assert_eq!(places[&fourth], place(1, third));

        // The last one leaving moves nobody: no event.
        let canceled = store.cancel(Scope::All, fourth).await.unwrap();
        assert!(canceled.queue_moved.is_none());
        let stored = store
            .events_after(Scope::All, canceled.event.seq - 1, 10)
            .await
            .unwrap();
        assert_eq!(stored.len(), 1, "{stored:?}");
        // Nor does a change that leaves no queue (the holder's cancel).
        let canceling = store.cancel(Scope::All, third).await.unwrap();
        assert_eq!(canceling.action.state, Canceling);
        assert!(canceling.queue_moved.is_none());
        assert!(store.queue_places(Scope::All, &all).await.unwrap().len() == 1);
    }

    pub async fn canceling_a_pending_action_does_not_promote_while_the_object_is_busy(store: &dyn Store) {
        let object = Uuid::new_v4();
        let first = store.submit_action(new_action("acme", object)).await.unwrap();
        let second = store.submit_action(new_action("acme", object)).await.unwrap();
        let third = store.submit_action(new_action("acme", object)).await.unwrap();
        let canceled = store
            .transition(Scope::All, second.action.uuid, Canceled, None)
            .await
            .unwrap();
        assert_eq!(canceled.action.state, Canceled);
        assert!(canceled.promoted.is_none());
        assert_eq!(state_of(store, first.action.uuid).await, InProgress);
        assert_eq!(state_of(store, third.action.uuid).await, Pending);

        // Cancel the running one: Canceling holds the object too.
        let canceling = store
            .transition(Scope::All, first.action.uuid, Canceling, None)
            .await
            .unwrap();
        assert!(canceling.promoted.is_none());
        assert_eq!(state_of(store, third.action.uuid).await, Pending);
        let ended = store
            .transition(Scope::All, first.action.uuid, Canceled, None)
            .await
            .unwrap();
        assert_eq!(ended.promoted.unwrap().action.uuid, third.action.uuid);
    }

    pub async fn illegal_transitions_are_refused_and_change_nothing(store: &dyn Store) {
        let object = Uuid::new_v4();
        let running = store.submit_action(new_action("acme", object)).await.unwrap();
        let pending = store.submit_action(new_action("acme", object)).await.unwrap();
        let before = store.events_after(Scope::All, 0, 100).await.unwrap();

        for (uuid, from, to) in [
            (running.action.uuid, InProgress, Pending),
            (running.action.uuid, InProgress, Canceled),
            (pending.action.uuid, Pending, Success),
            (pending.action.uuid, Pending, Canceling),
        ] {
            let err = store.transition(Scope::All, uuid, to, None).await.unwrap_err();
            match err {
                Error::Transition(e) => assert_eq!(e, IllegalTransition { from, to }),
                other => panic!("{from} -> {to}: {other:?}"),
            }
            assert_eq!(state_of(store, uuid).await, from);
        }

        store
            .transition(Scope::All, running.action.uuid, Failed, None)
            .await
            .unwrap();
        for to in ActionState::ALL {
            let err = store
                .transition(Scope::All, running.action.uuid, to, None)
                .await
                .unwrap_err();
            assert!(
                matches!(err, Error::Transition(IllegalTransition { from: Failed, .. })),
                "{err:?}"
            );
        }
        assert_eq!(state_of(store, running.action.uuid).await, Failed);
        // Only the Failed event and the promotion were added.
        let after = store.events_after(Scope::All, 0, 100).await.unwrap();
        assert_eq!(after.len(), before.len() + 2);
    }

    pub async fn a_transition_of_an_unknown_action_is_not_found(store: &dyn Store) {
        let err = store
            .transition(Scope::All, Uuid::new_v4(), Success, None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    }

    pub async fn actions_of_another_namespace_are_invisible(store: &dyn Store) {
        let s = store
            .submit_action(new_action("acme", Uuid::new_v4()))
            .await
            .unwrap();
        let acme = ["acme".to_string()];
        let other = ["other".to_string(), "more".to_string()];
        let uuid = s.action.uuid;
        assert!(store
            .get_action(Scope::Namespaces(&acme), uuid)
            .await
            .unwrap()
            .is_some());
        assert!(store
            .get_action(Scope::Namespaces(&other), uuid)
            .await
            .unwrap()
            .is_none());
        assert!(store
            .get_action(Scope::Namespaces(&[]), uuid)
            .await
            .unwrap()
            .is_none());
        let err = store
            .transition(Scope::Namespaces(&other), uuid, Canceling, None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
        assert_eq!(state_of(store, uuid).await, InProgress);
        store
            .transition(Scope::Namespaces(&acme), uuid, Canceling, None)
            .await
            .unwrap();
    }

    // --- leases ----------------------------------------------------------

    pub async fn a_wrong_lease_token_is_refused(store: &dyn Store) {
        let s = store
            .submit_action(new_action("acme", Uuid::new_v4()))
            .await
            .unwrap();
        let uuid = s.action.uuid;
        store.claim_action(uuid, "w1", LONG_LEASE).await.unwrap().unwrap();
        let stranger = LeaseToken(Uuid::new_v4());
        let err = store
            .transition(Scope::All, uuid, Success, Some(stranger))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Transition(IllegalTransition {
                    from: InProgress,
                    to: Success
                })
            ),
            "{err:?}"
        );
        assert_eq!(state_of(store, uuid).await, InProgress);
        let err = store
            .append_logs(uuid, Some(stranger), &lines(&["x"]))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        assert!(store.logs(uuid, None).await.unwrap().is_empty());
    }

    pub async fn an_action_is_claimed_once_until_its_lease_expires(store: &dyn Store) {
        let s = store
            .submit_action(new_action("acme", Uuid::new_v4()))
            .await
            .unwrap();
        let uuid = s.action.uuid;
        let first = store
            .claim_action(uuid, "w1", SHORT_LEASE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(first.action.claims, 1);
        assert_eq!(first.action.state, InProgress);
        assert!(store
            .claim_action(uuid, "w2", SHORT_LEASE)
            .await
            .unwrap()
            .is_none());

        tokio::time::sleep(PAST_SHORT_LEASE).await;
        let second = store.claim_action(uuid, "w2", LONG_LEASE).await.unwrap().unwrap();
        assert_eq!(second.action.claims, 2);
        assert_ne!(second.token, first.token);
        assert_eq!(
            store.heartbeat(uuid, first.token, LONG_LEASE).await.unwrap(),
            None
        );
        assert_eq!(
            store.heartbeat(uuid, second.token, LONG_LEASE).await.unwrap(),
            Some(InProgress)
        );

        // Missing, Pending and finished actions cannot be claimed.
        assert!(store
            .claim_action(Uuid::new_v4(), "w1", LONG_LEASE)
            .await
            .unwrap()
            .is_none());
        let pending = store
            .submit_action(new_action("acme", s.action.object_uuid))
            .await
            .unwrap();
        assert!(store
            .claim_action(pending.action.uuid, "w1", LONG_LEASE)
            .await
            .unwrap()
            .is_none());
        store
            .transition(Scope::All, uuid, Success, Some(second.token))
            .await
            .unwrap();
        assert!(store
            .claim_action(uuid, "w3", LONG_LEASE)
            .await
            .unwrap()
            .is_none());
    }

    pub async fn a_batch_claim_takes_only_the_claimable_each_with_its_own_lease(store: &dyn Store) {
        let mut dispatched = vec![];
        for _ in 0..3 {
            let s = store
                .submit_action(new_action("acme", Uuid::new_v4()))
                .await
                .unwrap();
            dispatched.push(s.action.uuid);
        }
        let busy = store
            .submit_action(new_action("acme", Uuid::new_v4()))
            .await
            .unwrap();
        let pending = store
            .submit_action(new_action("acme", busy.action.object_uuid))
            .await
            .unwrap();
        assert_eq!(pending.action.state, Pending);
        let held = store
            .claim_action(busy.action.uuid, "w0", LONG_LEASE)
            .await
            .unwrap()
            .unwrap();
        // Asked in this order: two claimable, a leased one, a Pending one, a
        // missing one, the third claimable.
        let ask = [
            dispatched[1],
            dispatched[0],
            busy.action.uuid,
            pending.action.uuid,
            Uuid::new_v4(),
            dispatched[2],
        ];
        let claims = store.claim_actions(&ask, "w1", LONG_LEASE).await.unwrap();
        let got: Vec<Uuid> = claims.iter().map(|c| c.action.uuid).collect();
        assert_eq!(got, vec![dispatched[1], dispatched[0], dispatched[2]]);
        assert!(claims.iter().all(|c| c.action.claims == 1));
        let tokens: std::collections::HashSet<_> = claims.iter().map(|c| c.token).collect();
        assert_eq!(tokens.len(), 3, "every claim has a token of its own");
        // Each token holds its own action only, and the holder's is untouched.
        for c in &claims {
            assert_eq!(
                store.heartbeat(c.action.uuid, c.token, LONG_LEASE).await.unwrap(),
                Some(InProgress)
            );
        }
        assert_eq!(
            store
                .heartbeat(dispatched[0], claims[0].token, LONG_LEASE)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .heartbeat(busy.action.uuid, held.token, LONG_LEASE)
                .await
                .unwrap(),
            Some(InProgress)
        );
        // Claimed once: asking again claims nothing.
        assert!(store
            .claim_actions(&ask, "w2", LONG_LEASE)
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .claim_actions(&[], "w2", LONG_LEASE)
            .await
            .unwrap()
            .is_empty());
    }

    pub async fn heartbeat_holds_only_with_the_current_token(store: &dyn Store) {
        let s = store
            .submit_action(new_action("acme", Uuid::new_v4()))
            .await
            .unwrap();
        let uuid = s.action.uuid;
        let claim = store
            .claim_action(uuid, "w1", SHORT_LEASE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store.heartbeat(uuid, claim.token, SHORT_LEASE).await.unwrap(),
            Some(InProgress)
        );
        assert_eq!(
            store
                .heartbeat(uuid, LeaseToken(Uuid::new_v4()), SHORT_LEASE)
                .await
                .unwrap(),
            None
        );
        assert_eq!(
            store
                .heartbeat(Uuid::new_v4(), claim.token, SHORT_LEASE)
                .await
                .unwrap(),
            None
        );
        // Heartbeats keep the lease alive past its first expiry.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(
                store.heartbeat(uuid, claim.token, SHORT_LEASE).await.unwrap(),
                Some(InProgress)
            );
        }
        assert!(store
            .claim_action(uuid, "w2", SHORT_LEASE)
            .await
            .unwrap()
            .is_none());
    }

    // --- logs ------------------------------------------------------------

    pub async fn log_lines_are_numbered_without_gaps_across_batches(store: &dyn Store) {
        let s = store
            .submit_action(new_action("acme", Uuid::new_v4()))
            .await
            .unwrap();
        let uuid = s.action.uuid;
        let claim = store.claim_action(uuid, "w1", LONG_LEASE).await.unwrap().unwrap();
        let a = store
            .append_logs(uuid, Some(claim.token), &lines(&["one", "two", "three"]))
            .await
            .unwrap();
        assert_eq!(a.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(a[1].log, "two");
        assert_eq!(a[1].action_uuid, uuid);
        assert!(store.append_logs(uuid, None, &[]).await.unwrap().is_empty());
        let b = store.append_logs(uuid, None, &lines(&["four"])).await.unwrap();
        assert_eq!(b[0].seq, 4);

        // Concurrent batches interleave without overlapping.
        let batches =
            join_all((0..8).map(|_| store.append_logs(uuid, Some(claim.token), five_lines()))).await;
        for batch in batches {
            assert_eq!(batch.unwrap().len(), 5);
        }
        let all = store.logs(uuid, None).await.unwrap();
        assert_eq!(
            all.iter().map(|l| l.seq).collect::<Vec<_>>(),
            (1..=44).collect::<Vec<_>>()
        );
        assert_eq!(all[..4], [a, b].concat()[..]);

        let tail = store.logs(uuid, Some(3)).await.unwrap();
        assert_eq!(tail.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![42, 43, 44]);
        assert!(store.logs(uuid, Some(0)).await.unwrap().is_empty());
        assert!(store.logs(Uuid::new_v4(), None).await.unwrap().is_empty());

        let err = store
            .append_logs(Uuid::new_v4(), None, &lines(&["x"]))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    }

    /// Five lines, shared by concurrent appends.
    fn five_lines() -> &'static [NewLogLine] {
        use std::sync::OnceLock;
        static LINES: OnceLock<Vec<NewLogLine>> = OnceLock::new();
        LINES.get_or_init(|| lines(&["a", "b", "c", "d", "e"]))
    }

    // --- sweeps ----------------------------------------------------------

    pub async fn reaping_requeues_below_max_claims_and_fails_at_max_claims(store: &dyn Store) {
        let object = Uuid::new_v4();
        let s = store.submit_action(new_action("acme", object)).await.unwrap();
        let waiting = store.submit_action(new_action("acme", object)).await.unwrap();
        let uuid = s.action.uuid;
        store.mark_outbox_sent(&[s.outbox_id.unwrap()]).await.unwrap();

        let claim = store
            .claim_action(uuid, "w1", SHORT_LEASE)
            .await
            .unwrap()
            .unwrap();
        // A live lease is left alone.
        assert_eq!(
            store.reap_expired_leases(2, 100).await.unwrap(),
            Default::default()
        );
        tokio::time::sleep(PAST_SHORT_LEASE).await;

        let reaped = store.reap_expired_leases(2, 100).await.unwrap();
        assert!(reaped.failed.is_empty());
        assert_eq!(reaped.requeued.len(), 1);
        let requeued = &reaped.requeued[0];
        assert_eq!(requeued.action.uuid, uuid);
        assert_eq!(requeued.action.state, InProgress);
        assert_eq!(requeued.event.action, EventKind::Update);
        assert_eq!(outbox_rows(store, uuid).await, vec![requeued.outbox_id.unwrap()]);
        // The lease is gone: the old token is refused, a new claim succeeds.
        assert_eq!(
            store.heartbeat(uuid, claim.token, SHORT_LEASE).await.unwrap(),
            None
        );
        let second = store
            .claim_action(uuid, "w2", SHORT_LEASE)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second.action.claims, 2);

        tokio::time::sleep(PAST_SHORT_LEASE).await;
        let reaped = store.reap_expired_leases(2, 100).await.unwrap();
        assert!(reaped.requeued.is_empty());
        assert_eq!(reaped.failed.len(), 1);
        let failed = &reaped.failed[0];
        assert_eq!(failed.action.state, Failed);
        assert!(failed.action.end_date.is_some());
        assert_eq!(failed.event.state, "Failed");
        assert_eq!(
            failed.promoted.as_ref().map(|p| p.action.uuid),
            Some(waiting.action.uuid)
        );
        assert_eq!(state_of(store, uuid).await, Failed);
        assert_eq!(
            store.reap_expired_leases(2, 100).await.unwrap(),
            Default::default()
        );
    }

    pub async fn reaping_a_canceling_action_cancels_it(store: &dyn Store) {
        let s = store
            .submit_action(new_action("acme", Uuid::new_v4()))
            .await
            .unwrap();
        let uuid = s.action.uuid;
        store
            .claim_action(uuid, "w1", SHORT_LEASE)
            .await
            .unwrap()
            .unwrap();
        store.transition(Scope::All, uuid, Canceling, None).await.unwrap();
        tokio::time::sleep(PAST_SHORT_LEASE).await;
        let reaped = store.reap_expired_leases(5, 100).await.unwrap();
        assert!(reaped.requeued.is_empty());
        assert_eq!(reaped.failed.len(), 1);
        assert_eq!(reaped.failed[0].action.state, Canceled);
        assert_eq!(state_of(store, uuid).await, Canceled);
    }

    /// One action in each situation the redispatch sweeps tell apart.
    struct Situations {
        /// In progress, never claimed: waits for a worker.
        unclaimed: Uuid,
        /// In progress, leased by a live worker.
        leased: Uuid,
        /// In progress, never claimed, with a Pending action behind it.
        busy: Uuid,
        /// Pending behind `busy`.
        pending: Uuid,
        /// Cancelled before any worker claimed it: waits for a worker too.
        canceling: Uuid,
        /// Finished.
        done: Uuid,
    }

    impl Situations {
        async fn submit(store: &dyn Store) -> Situations {
            let submit = |object: Uuid| async move {
                store
                    .submit_action(new_action("acme", object))
                    .await
                    .unwrap()
                    .action
            };
            let unclaimed = submit(Uuid::new_v4()).await.uuid;
            let leased = submit(Uuid::new_v4()).await.uuid;
            store
                .claim_action(leased, "w1", LONG_LEASE)
                .await
                .unwrap()
                .unwrap();
            let object = Uuid::new_v4();
            let busy = submit(object).await.uuid;
            let pending = submit(object).await;
            assert_eq!(pending.state, Pending);
            let canceling = submit(Uuid::new_v4()).await.uuid;
            store
                .transition(Scope::All, canceling, Canceling, None)
                .await
                .unwrap();
            let done = submit(Uuid::new_v4()).await.uuid;
            let c = store.claim_action(done, "w1", LONG_LEASE).await.unwrap().unwrap();
            store
                .transition(Scope::All, done, Success, Some(c.token))
                .await
                .unwrap();
            Situations {
                unclaimed,
                leased,
                busy,
                pending: pending.uuid,
                canceling,
                done,
            }
        }

        /// The ones that wait for a worker, sorted.
        fn waiting(&self) -> Vec<Uuid> {
            let mut w = vec![self.unclaimed, self.busy, self.canceling];
            w.sort();
            w
        }
    }

    pub async fn unclaimed_dispatches_are_redispatched(store: &dyn Store) {
        let s = Situations::submit(store).await;
        // Nothing is old enough yet.
        let none = store
            .redispatch_unclaimed(Duration::from_secs(60), 100)
            .await
            .unwrap();
        assert!(none.is_empty());
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut again = store
            .redispatch_unclaimed(Duration::from_millis(200), 100)
            .await
            .unwrap();
        again.sort();
        assert_eq!(again, s.waiting());
        // Their dispatch time was reset, so they are not due again at once.
        assert!(store
            .redispatch_unclaimed(Duration::from_millis(200), 100)
            .await
            .unwrap()
            .is_empty());
    }

    /// `redispatch_actions` picks, of the uuids named, only the actions that
    /// wait for a worker: In progress or Canceling with no lease.
    pub async fn named_actions_are_redispatched_only_while_they_wait_for_a_worker(store: &dyn Store) {
        let s = Situations::submit(store).await;
        let named = [
            s.unclaimed,
            s.leased,
            s.busy,
            s.pending,
            s.canceling,
            s.done,
            Uuid::new_v4(),
        ];
        let mut got = store.redispatch_actions(&named).await.unwrap();
        got.sort();
        assert_eq!(got, s.waiting());
        assert!(store.redispatch_actions(&[]).await.unwrap().is_empty());
    }

    pub async fn outbox_rows_are_marked_sent_idempotently(store: &dyn Store) {
        let a = store
            .submit_action(new_action("acme", Uuid::new_v4()))
            .await
            .unwrap();
        let b = store
            .submit_action(new_action("acme", Uuid::new_v4()))
            .await
            .unwrap();
        let (ida, idb) = (a.outbox_id.unwrap(), b.outbox_id.unwrap());
        let unsent = store.unsent_outbox(Duration::ZERO, 100).await.unwrap();
        assert_eq!(unsent.iter().map(|e| e.id).collect::<Vec<_>>(), vec![ida, idb]);
        assert_eq!(unsent[0].action_uuid, a.action.uuid);
        assert_eq!(store.unsent_outbox(Duration::ZERO, 1).await.unwrap().len(), 1);
        assert!(store
            .unsent_outbox(Duration::from_secs(60), 100)
            .await
            .unwrap()
            .is_empty());

        store.mark_outbox_sent(&[ida]).await.unwrap();
        store.mark_outbox_sent(&[ida]).await.unwrap();
        store.mark_outbox_sent(&[]).await.unwrap();
        let unsent = store.unsent_outbox(Duration::ZERO, 100).await.unwrap();
        assert_eq!(unsent.iter().map(|e| e.id).collect::<Vec<_>>(), vec![idb]);
        store.mark_outbox_sent(&[ida, idb, 999_999]).await.unwrap();
        assert!(store.unsent_outbox(Duration::ZERO, 100).await.unwrap().is_empty());
    }

    // --- events ----------------------------------------------------------

    pub async fn events_after_are_ordered_and_scoped(store: &dyn Store) {
        let mut submitted = Vec::new();
        for ns in ["acme", "other", "acme", "labs"] {
            submitted.push(store.submit_action(new_action(ns, Uuid::new_v4())).await.unwrap());
        }
        let all = store.events_after(Scope::All, 0, 100).await.unwrap();
        assert_eq!(all.len(), 4);
        assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(
            all.iter().map(|e| e.uuid.clone()).collect::<Vec<_>>(),
            submitted
                .iter()
                .map(|s| s.action.uuid.to_string())
                .collect::<Vec<_>>()
        );
        assert_eq!(all[0], submitted[0].event);

        let acme = ["acme".to_string(), "labs".to_string()];
        let scoped = store
            .events_after(Scope::Namespaces(&acme), 0, 100)
            .await
            .unwrap();
        assert_eq!(
            scoped.iter().map(|e| e.namespace.as_str()).collect::<Vec<_>>(),
            vec!["acme", "acme", "labs"]
        );
        let after = store
            .events_after(Scope::Namespaces(&acme), scoped[0].seq, 1)
            .await
            .unwrap();
        assert_eq!(after, vec![scoped[1].clone()]);
        assert!(store
            .events_after(Scope::Namespaces(&[]), 0, 100)
            .await
            .unwrap()
            .is_empty());
        assert!(store
            .events_after(Scope::All, all[3].seq, 100)
            .await
            .unwrap()
            .is_empty());
        assert_eq!(store.last_event_seq().await.unwrap(), all[3].seq);
    }
    // --- lists -----------------------------------------------------------

    pub async fn action_lists_filter_page_and_scope(store: &dyn Store) {
        use stevedore_core::store::ActionFilter;
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut uuids = vec![];
        for obj in [a, a, b] {
            uuids.push(
                store
                    .submit_action(new_action("acme", obj))
                    .await
                    .unwrap()
                    .action
                    .uuid,
            );
        }
        let other = store
            .submit_action(new_action("evil", Uuid::new_v4()))
            .await
            .unwrap()
            .action
            .uuid;
        let acme = ["acme".to_string()];
        let scope = Scope::Namespaces(&acme);
        let all = store
            .list_actions(scope, &ActionFilter::default(), 10, 0)
            .await
            .unwrap();
        assert_eq!(all.total, 3);
        let newest_first: Vec<Uuid> = uuids.iter().rev().copied().collect();
        assert_eq!(all.items.iter().map(|x| x.uuid).collect::<Vec<_>>(), newest_first);
        assert!(!all.items.iter().any(|x| x.uuid == other));

        let page = store
            .list_actions(scope, &ActionFilter::default(), 2, 2)
            .await
            .unwrap();
        assert_eq!((page.total, page.items.len()), (3, 1));
        assert_eq!(page.items[0].uuid, uuids[0]);

        let f = ActionFilter {
            states: vec![Pending],
            ..Default::default()
        };
        let pending = store.list_actions(scope, &f, 10, 0).await.unwrap();
        assert_eq!(
            pending.items.iter().map(|x| x.uuid).collect::<Vec<_>>(),
            vec![uuids[1]]
        );

        let f = ActionFilter {
            objects: Some(vec![b]),
            ..Default::default()
        };
        assert_eq!(
            store.list_actions(scope, &f, 10, 0).await.unwrap().items[0].uuid,
            uuids[2]
        );
        let f = ActionFilter {
            objects: Some(vec![]),
            ..Default::default()
        };
        assert_eq!(store.list_actions(scope, &f, 10, 0).await.unwrap().total, 0);

        let f = ActionFilter {
            uuid: Some(uuids[1]),
            ..Default::default()
        };
        assert_eq!(store.list_actions(scope, &f, 10, 0).await.unwrap().total, 1);
        let prefix = uuids[1].to_string()[..8].to_string();
        let f = ActionFilter {
            uuid_prefix: Some(prefix),
            ..Default::default()
        };
        let by_prefix = store.list_actions(scope, &f, 10, 0).await.unwrap();
        assert!(by_prefix.items.iter().any(|x| x.uuid == uuids[1]));
        let f = ActionFilter {
            uuid: Some(other),
            ..Default::default()
        };
        assert_eq!(
            store.list_actions(scope, &f, 10, 0).await.unwrap().total,
            0,
            "another tenant's"
        );

        let now = Utc::now();
        let f = ActionFilter {
            start_gte: Some(now - chrono::Duration::minutes(1)),
            ..Default::default()
        };
        assert_eq!(store.list_actions(scope, &f, 10, 0).await.unwrap().total, 3);
        let f = ActionFilter {
            start_lte: Some(now - chrono::Duration::minutes(1)),
            ..Default::default()
        };
        assert_eq!(store.list_actions(scope, &f, 10, 0).await.unwrap().total, 0);
        let f = ActionFilter {
            end_gte: Some(now - chrono::Duration::minutes(1)),
            ..Default::default()
        };
        assert_eq!(
            store.list_actions(scope, &f, 10, 0).await.unwrap().total,
            0,
            "none has ended"
        );
        let f = ActionFilter {
            namespace: Some("evil".into()),
            ..Default::default()
        };
        assert_eq!(store.list_actions(scope, &f, 10, 0).await.unwrap().total, 0);
        let f = ActionFilter {
            namespace: Some("evil".into()),
            ..Default::default()
        };
        assert_eq!(store.list_actions(Scope::All, &f, 10, 0).await.unwrap().total, 1);

        let f = ActionFilter {
            object_type: Some("service".into()),
            ..Default::default()
        };
        assert_eq!(store.list_actions(scope, &f, 10, 0).await.unwrap().total, 3);
        let f = ActionFilter {
            object_type: Some("node".into()),
            ..Default::default()
        };
        assert_eq!(store.list_actions(scope, &f, 10, 0).await.unwrap().total, 0);
    }

    pub async fn objects_list_update_and_record_events(store: &dyn Store) {
        use stevedore_core::store::ObjectFilter;
        let stack = Object {
            object_type: "stack".into(),
            parents: vec![],
            ..object("acme")
        };
        let created = store.insert_object(&stack).await.unwrap();
        assert_eq!(
            (created.object_type.as_str(), created.action),
            ("stack", EventKind::Create)
        );
        assert!(created.seq > 0);
        let svc = Object {
            parents: vec![stack.resource_uri.clone()],
            ..object("acme")
        };
        store.insert_object(&svc).await.unwrap();
        store.insert_object(&object("evil")).await.unwrap();
        let acme = ["acme".to_string()];
        let scope = Scope::Namespaces(&acme);
        let all = store
            .list_objects(scope, &ObjectFilter::default(), 10, 0)
            .await
            .unwrap();
        assert_eq!(all.total, 2);
        let f = ObjectFilter {
            object_type: Some("service".into()),
            ..Default::default()
        };
        assert_eq!(
            store.list_objects(scope, &f, 10, 0).await.unwrap().items[0].uuid,
            svc.uuid
        );
        let f = ObjectFilter {
            parent: Some(stack.resource_uri.clone()),
            ..Default::default()
        };
        assert_eq!(
            store.list_objects(scope, &f, 10, 0).await.unwrap().items[0].uuid,
            svc.uuid
        );

        let patch = ObjectChange::Update(ObjectPatch {
            name: Some("api".into()),
            attributes: vec![("image".into(), Some("caddy".into()))],
        });
        let ev = change(store, &acme, &svc, patch).await.unwrap().event;
        assert_eq!(
            (ev.action, ev.uuid.clone()),
            (EventKind::Update, svc.uuid.to_string())
        );
        let got = store.get_object(scope, svc.uuid).await.unwrap().unwrap();
        assert_eq!(
            (got.name.as_str(), got.attributes["image"].as_str()),
            ("api", Some("caddy"))
        );

        change(store, &acme, &svc, ObjectChange::Terminate).await.unwrap();
        let f = ObjectFilter {
            object_type: Some("service".into()),
            ..Default::default()
        };
        assert_eq!(store.list_objects(scope, &f, 10, 0).await.unwrap().total, 0);
        let f = ObjectFilter {
            include_deleted: true,
            ..f
        };
        assert_eq!(store.list_objects(scope, &f, 10, 0).await.unwrap().total, 1);

        let evil = ["evil".to_string()];
        let live = object("acme");
        store.insert_object(&live).await.unwrap();
        let err = change(store, &evil, &live, ObjectChange::Terminate)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    }

    /// An object change with the action that records it, as the API makes
    /// it: visible in `namespaces`, the action recorded as Success.
    async fn change(
        store: &dyn Store,
        namespaces: &[String],
        object: &Object,
        change: ObjectChange,
    ) -> Result<ObjectChanged, Error> {
        let mut action = new_action(&object.namespace, object.uuid);
        action.verb = change.verb().to_string();
        action.completed = Some(Success);
        store
            .change_object(ObjectRequest {
                uuid: object.uuid,
                object_type: object.object_type.clone(),
                lookup: ObjectLookup {
                    visible: Some(namespaces.to_vec()),
                    namespace: None,
                },
                change,
                action,
            })
            .await
    }

    pub async fn an_object_change_records_its_event_log_entry_and_action_together(store: &dyn Store) {
        let acme = ["acme".to_string()];
        let svc = object("acme");
        let created = change(store, &acme, &svc, ObjectChange::Create(svc.clone()))
            .await
            .unwrap();
        assert_eq!(created.object.uuid, svc.uuid);
        assert_eq!(
            (created.event.action, created.event.uuid.clone()),
            (EventKind::Create, svc.uuid.to_string())
        );
        assert_eq!(created.action.action.object_uuid, svc.uuid);
        assert_eq!(created.action.action.state, Success);
        assert!(
            created.action.event.seq > created.event.seq,
            "the object's event comes first"
        );
        let events = store.events_after(Scope::All, 0, 10).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [created.event.seq, created.action.event.seq]
        );
        let log = store
            .system_log(Scope::All, &Default::default(), 10, 0)
            .await
            .unwrap();
        assert!(
            log.iter()
                .any(|e| e.message.contains(&format!("(service {}) created", svc.uuid))),
            "{log:?}"
        );
        // A uuid that exists: nothing is written, not even the action.
        let again = change(store, &acme, &svc, ObjectChange::Create(svc.clone())).await;
        assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
        assert_eq!(store.events_after(Scope::All, 0, 10).await.unwrap().len(), 2);
    }

    pub async fn a_terminated_object_is_never_changed_again(store: &dyn Store) {
        let acme = ["acme".to_string()];
        let svc = object("acme");
        store.insert_object(&svc).await.unwrap();
        let patch = || {
            ObjectChange::Update(ObjectPatch {
                name: Some("revived".into()),
                attributes: vec![],
            })
        };
        // A PATCH racing a DELETE, many times over: whichever commits
        // first, the object ends terminated, and a PATCH after the DELETE
        // is refused without writing anything.
        for _ in 0..10 {
            let o = object("acme");
            store.insert_object(&o).await.unwrap();
            let (patched, deleted) = futures::join!(
                change(store, &acme, &o, patch()),
                change(store, &acme, &o, ObjectChange::Terminate)
            );
            deleted.unwrap();
            let got = store.get_object(Scope::All, o.uuid).await.unwrap().unwrap();
            assert_eq!(got.state, "Terminated", "patched: {patched:?}");
            assert!(got.deleted_at.is_some());
        }
        change(store, &acme, &svc, ObjectChange::Terminate).await.unwrap();
        let before = store.events_after(Scope::All, 0, 1000).await.unwrap().len();
        let err = change(store, &acme, &svc, patch()).await.unwrap_err();
        assert!(
            matches!(&err, Error::Conflict(m) if m.contains("terminated")),
            "{err:?}"
        );
        let err = change(store, &acme, &svc, ObjectChange::Terminate)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Conflict(m) if m.contains("already terminated")),
            "{err:?}"
        );
        assert_eq!(
            store.events_after(Scope::All, 0, 1000).await.unwrap().len(),
            before
        );
        let got = store.get_object(Scope::All, svc.uuid).await.unwrap().unwrap();
        assert_eq!(got.name, svc.name);
    }

    pub async fn cancel_moves_by_the_lifecycle_rule(store: &dyn Store) {
        let object = Uuid::new_v4();
        let running = store.submit_action(new_action("acme", object)).await.unwrap();
        let waiting = store.submit_action(new_action("acme", object)).await.unwrap();
        assert_eq!(waiting.action.state, Pending);
        let t = store.cancel(Scope::All, waiting.action.uuid).await.unwrap();
        assert_eq!(t.action.state, Canceled);
        assert!(t.promoted.is_none(), "the object is still busy");
        let t = store.cancel(Scope::All, running.action.uuid).await.unwrap();
        assert_eq!(t.action.state, Canceling);
        let err = store.cancel(Scope::All, running.action.uuid).await.unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        let evil = ["evil".to_string()];
        let err = store
            .cancel(Scope::Namespaces(&evil), running.action.uuid)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    }

    pub async fn a_canceling_action_can_still_be_claimed_to_be_stopped(store: &dyn Store) {
        let s = store
            .submit_action(new_action("acme", Uuid::new_v4()))
            .await
            .unwrap();
        store
            .transition(Scope::All, s.action.uuid, Canceling, None)
            .await
            .unwrap();
        let claim = store
            .claim_action(s.action.uuid, "w1", LONG_LEASE)
            .await
            .unwrap()
            .expect("claimable");
        assert_eq!(claim.action.state, Canceling);
        let t = store
            .transition(Scope::All, s.action.uuid, Canceled, Some(claim.token))
            .await
            .unwrap();
        assert_eq!(t.action.state, Canceled);
    }

    pub async fn heartbeat_reports_a_cancel_under_way(store: &dyn Store) {
        let s = store
            .submit_action(new_action("acme", Uuid::new_v4()))
            .await
            .unwrap();
        let uuid = s.action.uuid;
        let claim = store.claim_action(uuid, "w1", LONG_LEASE).await.unwrap().unwrap();
        assert_eq!(
            store.heartbeat(uuid, claim.token, LONG_LEASE).await.unwrap(),
            Some(InProgress)
        );
        // A cancel whose control message never reached the worker.
        store.transition(Scope::All, uuid, Canceling, None).await.unwrap();
        assert_eq!(
            store.heartbeat(uuid, claim.token, LONG_LEASE).await.unwrap(),
            Some(Canceling)
        );
        // The lease still fences: the worker ends it as Canceled.
        store
            .transition(Scope::All, uuid, Canceled, Some(claim.token))
            .await
            .unwrap();
        assert_eq!(
            store.heartbeat(uuid, claim.token, LONG_LEASE).await.unwrap(),
            None
        );
    }

    pub async fn releasing_a_lease_hands_the_action_back_at_once(store: &dyn Store) {
        let object = Uuid::new_v4();
        let s = store.submit_action(new_action("acme", object)).await.unwrap();
        let waiting = store.submit_action(new_action("acme", object)).await.unwrap();
        let uuid = s.action.uuid;
        store.mark_outbox_sent(&[s.outbox_id.unwrap()]).await.unwrap();
        let claim = store.claim_action(uuid, "w1", LONG_LEASE).await.unwrap().unwrap();

        // Only the holder's token releases it.
        assert_eq!(
            store
                .release_lease(uuid, LeaseToken(Uuid::new_v4()))
                .await
                .unwrap(),
            None
        );
        assert!(store
            .claim_action(uuid, "w2", LONG_LEASE)
            .await
            .unwrap()
            .is_none());

        let released = store
            .release_lease(uuid, claim.token)
            .await
            .unwrap()
            .expect("released");
        assert_eq!(released.action.uuid, uuid);
        assert_eq!(released.action.state, InProgress);
        assert_eq!(released.event.action, EventKind::Update);
        assert_eq!(outbox_rows(store, uuid).await, vec![released.outbox_id.unwrap()]);
        // The object is still held: the Pending action stays Pending.
        assert_eq!(state_of(store, waiting.action.uuid).await, Pending);
        // The old token is dead; another worker claims it without waiting.
        assert_eq!(
            store.heartbeat(uuid, claim.token, LONG_LEASE).await.unwrap(),
            None
        );
        assert_eq!(store.release_lease(uuid, claim.token).await.unwrap(), None);
        let second = store.claim_action(uuid, "w2", LONG_LEASE).await.unwrap().unwrap();
        assert_eq!(second.action.claims, 2);

        // A finished action is not handed back.
        store
            .transition(Scope::All, uuid, Success, Some(second.token))
            .await
            .unwrap();
        assert_eq!(store.release_lease(uuid, second.token).await.unwrap(), None);
        assert_eq!(state_of(store, uuid).await, Success);
    }
    // --- system log and retention ------------------------------------------

    pub async fn state_changes_write_the_system_log_and_filters_narrow_it(store: &dyn Store) {
        use stevedore_core::syslog::{LogLevel, NewSystemLog, SystemLogFilter};
        let s = store
            .submit_action(new_action("acme", Uuid::new_v4()))
            .await
            .unwrap();
        let claim = store
            .claim_action(s.action.uuid, "w", LONG_LEASE)
            .await
            .unwrap()
            .unwrap();
        store
            .transition(Scope::All, s.action.uuid, Failed, Some(claim.token))
            .await
            .unwrap();
        store
            .append_system_log(&[NewSystemLog {
                namespace: Some("evil".into()),
                category: "auth".into(),
                level: LogLevel::Warn,
                user: "mallory".into(),
                message: "authentication failed".into(),
            }])
            .await
            .unwrap();
        let acme = ["acme".to_string()];
        let scope = Scope::Namespaces(&acme);
        let all = store
            .system_log(scope, &SystemLogFilter::default(), 100, 0)
            .await
            .unwrap();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[0].id > all[1].id, "newest first");
        assert_eq!(
            (all[0].level, all[0].category.as_str()),
            (LogLevel::Error, "action")
        );
        assert!(all[0].message.contains(&s.action.uuid.to_string()) && all[0].message.ends_with("Failed"));
        assert_eq!(all[1].user, "acme");
        let now = Utc::now().timestamp();
        for (f, n) in [
            (
                SystemLogFilter {
                    level: Some(LogLevel::Info),
                    ..Default::default()
                },
                1,
            ),
            (
                SystemLogFilter {
                    text: Some("FAILED".into()),
                    ..Default::default()
                },
                1,
            ),
            (
                SystemLogFilter {
                    user: Some("nobody".into()),
                    ..Default::default()
                },
                0,
            ),
            (
                SystemLogFilter {
                    category: Some("action".into()),
                    ..Default::default()
                },
                2,
            ),
            (
                SystemLogFilter {
                    time_start: Some(now - 60),
                    time_end: Some(now + 60),
                    ..Default::default()
                },
                2,
            ),
            (
                SystemLogFilter {
                    time_end: Some(now - 60),
                    ..Default::default()
                },
                0,
            ),
            (
                SystemLogFilter {
                    before_id: Some(all[0].id),
                    ..Default::default()
                },
                1,
            ),
        ] {
            assert_eq!(
                store.system_log(scope, &f, 100, 0).await.unwrap().len(),
                n,
                "{f:?}"
            );
        }
        assert_eq!(
            store
                .system_log(scope, &SystemLogFilter::default(), 1, 1)
                .await
                .unwrap()[0]
                .id,
            all[1].id
        );
        assert_eq!(
            store
                .system_log(Scope::All, &SystemLogFilter::default(), 100, 0)
                .await
                .unwrap()
                .len(),
            3
        );
    }

    pub async fn system_log_retention_is_per_tenant(store: &dyn Store) {
        use stevedore_core::syslog::{LogLevel, NewSystemLog, SystemLogFilter};
        let entry = |ns: Option<&str>, i: usize| NewSystemLog {
            namespace: ns.map(str::to_string),
            category: "auth".into(),
            level: LogLevel::Warn,
            user: ns.unwrap_or("mallory").into(),
            message: format!("entry {i}"),
        };
        // A quiet tenant's history first, then a flood from another tenant
        // and from unknown users (operators only).
        let quiet: Vec<_> = (0..3).map(|i| entry(Some("quiet"), i)).collect();
        store.append_system_log(&quiet).await.unwrap();
        let loud: Vec<_> = (0..50).map(|i| entry(Some("loud"), i)).collect();
        store.append_system_log(&loud).await.unwrap();
        let nobody: Vec<_> = (0..20).map(|i| entry(None, i)).collect();
        store.append_system_log(&nobody).await.unwrap();

        let pruned = store.prune(Duration::from_secs(3600), 5).await.unwrap();
        assert_eq!(pruned.system_log, 45 + 15, "{pruned:?}");
        let read = |ns: &'static str| async move {
            let ns = [ns.to_string()];
            store
                .system_log(Scope::Namespaces(&ns), &SystemLogFilter::default(), 100, 0)
                .await
                .unwrap()
        };
        let quiet = read("quiet").await;
        assert_eq!(quiet.len(), 3, "another tenant's flood evicted nothing");
        let loud = read("loud").await;
        let kept: Vec<&str> = loud.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(kept, ["entry 49", "entry 48", "entry 47", "entry 46", "entry 45"]);
        let all = store
            .system_log(Scope::All, &SystemLogFilter::default(), 100, 0)
            .await
            .unwrap();
        assert_eq!(all.len(), 3 + 5 + 5, "{all:?}");
        assert_eq!(
            store
                .prune(Duration::from_secs(3600), 5)
                .await
                .unwrap()
                .system_log,
            0
        );
    }

    /// A key digest as the binary stores it (64 hex characters).
    fn digest_of(key: &str) -> String {
        stevedore_core::auth::hash_api_key(key)
    }

    pub async fn keys_are_listed_by_id_with_a_fingerprint_and_their_last_use(store: &dyn Store) {
        store.create_user("ann", &[]).await.unwrap();
        store.create_user("bob", &[]).await.unwrap();
        assert!(store.api_keys("ann").await.unwrap().is_empty());
        let before = Utc::now().trunc_subsecs(0) - chrono::Duration::seconds(1);
        let k1 = store.add_api_key("ann", &digest_of("k1")).await.unwrap();
        let k2 = store.add_api_key("ann", &digest_of("k2")).await.unwrap();
        store.add_api_key("bob", &digest_of("k3")).await.unwrap();
        let keys = store.api_keys("ann").await.unwrap();
        assert_eq!(keys.iter().map(|k| k.id).collect::<Vec<_>>(), vec![k1, k2]);
        assert_eq!(keys[0].fingerprint, digest_of("k1")[..8]);
        assert!(keys
            .iter()
            .all(|k| k.created_at >= before && k.last_used_at.is_none()));
        // A use is recorded, and a second one within the precision is not
        // written again.
        store.record_key_use(k2).await.unwrap();
        let used = store.api_keys("ann").await.unwrap()[1]
            .last_used_at
            .expect("a use");
        assert!(used >= before);
        store.record_key_use(k2).await.unwrap();
        assert_eq!(store.api_keys("ann").await.unwrap()[1].last_used_at, Some(used));
        assert!(store.api_keys("ann").await.unwrap()[0].last_used_at.is_none());
        let err = store.api_keys("nobody").await.unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
    }

    pub async fn revoking_a_key_ends_it_and_its_sessions_only(store: &dyn Store) {
        store.create_user("ann", &[]).await.unwrap();
        store.create_user("bob", &[]).await.unwrap();
        let k1 = store.add_api_key("ann", &digest_of("k1")).await.unwrap();
        let k2 = store.add_api_key("ann", &digest_of("k2")).await.unwrap();
        let bobs = store.add_api_key("bob", &digest_of("k3")).await.unwrap();
        let later = Utc::now() + chrono::Duration::hours(1);
        for (digest, user, key_id) in [("s1", "ann", k1), ("s2", "ann", k1), ("s3", "ann", k2)] {
            store
                .create_session(&session(digest, user, key_id, later))
                .await
                .unwrap();
        }
        let revision = store.credential_revision().await.unwrap();

        // Another user's key, or an unknown id, is not found and changes nothing.
        for (user, id) in [("ann", bobs), ("ann", k2 + 1000), ("nobody", k1)] {
            let err = store.revoke_api_key(user, id).await.unwrap_err();
            assert!(matches!(err, Error::NotFound(_)), "{user} {id}: {err:?}");
        }
        assert_eq!(store.credential_revision().await.unwrap(), revision);

        let revoked = store.revoke_api_key("ann", k1).await.unwrap();
        assert_eq!(revoked.fingerprint, digest_of("k1")[..8]);
        assert_eq!(revoked.sessions, 2);
        assert!(store.credential_revision().await.unwrap() > revision);
        let (_, keys) = store.credentials("ann").await.unwrap().unwrap();
        assert_eq!(keys.iter().map(|k| k.id).collect::<Vec<_>>(), vec![k2]);
        assert!(store.session("s1").await.unwrap().is_none());
        assert!(store.session("s2").await.unwrap().is_none());
        assert_eq!(store.session("s3").await.unwrap().unwrap().key_id, k2);
        // Revoked is revoked: again is not found, and no session can be
        // made from it.
        let err = store.revoke_api_key("ann", k1).await.unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
        let err = store
            .create_session(&session("s4", "ann", k1, later))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
        // Ids are not reused.
        let k4 = store.add_api_key("ann", &digest_of("k4")).await.unwrap();
        assert!(k4 > k2 && k4 != k1);
        assert_eq!(store.credentials("bob").await.unwrap().unwrap().1.len(), 1);
    }

    fn session(
        digest: &str,
        user: &str,
        key_id: i64,
        expires_at: chrono::DateTime<Utc>,
    ) -> stevedore_core::session::NewSession {
        stevedore_core::session::NewSession {
            digest: digest.to_string(),
            user: user.to_string(),
            key_id,
            expires_at,
        }
    }

    pub async fn sessions_resolve_until_they_expire_or_are_deleted(store: &dyn Store) {
        store.create_user("ann", &["acme".into()]).await.unwrap();
        let key = store.add_api_key("ann", &digest_of("k1")).await.unwrap();
        let later = (Utc::now() + chrono::Duration::hours(1)).trunc_subsecs(6);
        store
            .create_session(&session("live", "ann", key, later))
            .await
            .unwrap();
        let found = store.session("live").await.unwrap().expect("a live session");
        assert_eq!(found.user.name, "ann");
        assert_eq!(found.user.namespaces, vec!["ann", "acme"]);
        assert_eq!((found.key_id, found.expires_at), (key, later));
        assert!(store.session("unknown").await.unwrap().is_none());
        // A digest is stored once.
        let err = store
            .create_session(&session("live", "ann", key, later))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Conflict(_)), "{err:?}");
        // Another user's key cannot make a session for ann.
        store.create_user("bob", &[]).await.unwrap();
        let bobs = store.add_api_key("bob", &digest_of("k2")).await.unwrap();
        let err = store
            .create_session(&session("mixed", "ann", bobs, later))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");

        // Deleting: whose it was, once; the revision moves.
        let revision = store.credential_revision().await.unwrap();
        assert_eq!(
            store.delete_session("live").await.unwrap().as_deref(),
            Some("ann")
        );
        assert!(store.session("live").await.unwrap().is_none());
        assert_eq!(store.delete_session("live").await.unwrap(), None);
        assert!(store.credential_revision().await.unwrap() > revision);

        // Expired sessions are refused on use, and pruned.
        let past = Utc::now() - chrono::Duration::seconds(1);
        store
            .create_session(&session("old", "ann", key, past))
            .await
            .unwrap();
        assert!(store.session("old").await.unwrap().is_none());
        store
            .create_session(&session("old-2", "ann", key, past))
            .await
            .unwrap();
        store
            .create_session(&session("new", "ann", key, later))
            .await
            .unwrap();
        let pruned = store.prune(Duration::from_secs(3600), 1000).await.unwrap();
        assert_eq!(pruned.sessions, 1, "{pruned:?}");
        assert!(store.session("new").await.unwrap().is_some());
        // What refused and pruned them was the expiry, not the prune: the
        // expired one was deleted when it was refused.
        assert!(store.delete_session("old").await.unwrap().is_none());
    }

    pub async fn unknown_users_have_no_credentials(store: &dyn Store) {
        store.create_user("ann", &[]).await.unwrap();
        let (user, digests) = store.credentials("ann").await.unwrap().unwrap();
        assert_eq!((user.name.as_str(), digests.len()), ("ann", 0));
        assert!(store.credentials("nobody").await.unwrap().is_none());
        assert!(
            store.credentials("ANN").await.unwrap().is_none(),
            "names are exact"
        );
    }

    pub async fn pruning_never_touches_an_unfinished_action(store: &dyn Store) {
        use stevedore_core::syslog::SystemLogFilter;
        let obj = Uuid::new_v4();
        let done = store
            .submit_action(new_action("acme", obj))
            .await
            .unwrap()
            .action
            .uuid;
        let waiting = store
            .submit_action(new_action("acme", obj))
            .await
            .unwrap()
            .action
            .uuid;
        let running = store
            .submit_action(new_action("acme", Uuid::new_v4()))
            .await
            .unwrap()
            .action
            .uuid;
        let claim = store.claim_action(done, "w", LONG_LEASE).await.unwrap().unwrap();
        store
            .append_logs(done, Some(claim.token), &lines(&["x"]))
            .await
            .unwrap();
        store
            .transition(Scope::All, done, Success, Some(claim.token))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        let pruned = store.prune(Duration::from_millis(1), 1).await.unwrap();
        assert_eq!(pruned.actions, 1, "{pruned:?}");
        assert!(pruned.events > 0 && pruned.system_log > 0, "{pruned:?}");
        assert!(store.get_action(Scope::All, done).await.unwrap().is_none());
        assert!(store.logs(done, None).await.unwrap().is_empty());
        for uuid in [waiting, running] {
            assert!(
                store.get_action(Scope::All, uuid).await.unwrap().is_some(),
                "an unfinished action was pruned"
            );
        }
        assert!(
            store
                .system_log(Scope::All, &SystemLogFilter::default(), 10, 0)
                .await
                .unwrap()
                .len()
                <= 1
        );
    }
    // --- group commit --------------------------------------------------------

    pub async fn a_batch_commits_together_with_the_per_object_rules(store: &dyn Store) {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let batch = vec![
            new_action("acme", a),
            new_action("acme", b),
            new_action("acme", a),
        ];
        let done = store.submit_actions(&batch).await.unwrap();
        let states: Vec<ActionState> = done.iter().map(|s| s.action.state).collect();
        assert_eq!(states, vec![InProgress, InProgress, Pending]);
        assert!(done[0].outbox_id.is_some() && done[1].outbox_id.is_some() && done[2].outbox_id.is_none());
        assert!(done[0].event.seq < done[1].event.seq && done[1].event.seq < done[2].event.seq);

        // All or nothing: a duplicate uuid fails the batch and records none of it.
        let fresh = new_action("acme", Uuid::new_v4());
        let dup = NewAction {
            uuid: done[0].action.uuid,
            ..new_action("acme", Uuid::new_v4())
        };
        assert!(store.submit_actions(&[fresh.clone(), dup]).await.is_err());
        assert!(store.get_action(Scope::All, fresh.uuid).await.unwrap().is_none());
        assert!(store.submit_actions(&[]).await.unwrap().is_empty());

        // Each action got its own create event, stored, in batch order.
        let events = store
            .events_after(Scope::All, done[0].event.seq - 1, 100)
            .await
            .unwrap();
        let stored: Vec<(i64, String, String)> = events
            .iter()
            .filter(|e| e.object_type == "action")
            .map(|e| (e.seq, e.uuid.clone(), e.state.clone()))
            .collect();
        let returned: Vec<(i64, String, String)> = done
            .iter()
            .map(|s| (s.event.seq, s.action.uuid.to_string(), s.event.state.clone()))
            .collect();
        assert_eq!(stored, returned);
        assert_eq!(done[2].event.state, "Pending");
    }

    pub async fn a_batch_looks_up_its_objects_and_answers_each_request(store: &dyn Store) {
        let mine = object("acme");
        let theirs = object("globex");
        let mut gone = object("acme");
        for o in [&mine, &theirs, &gone] {
            store.insert_object(o).await.unwrap();
        }
        let all = ["acme".to_string(), "globex".to_string()];
        gone = change(store, &all, &gone, ObjectChange::Terminate)
            .await
            .unwrap()
            .object;
        let acme = ObjectLookup {
            visible: Some(vec!["acme".to_string()]),
            namespace: None,
        };
        // Named by uuid and type only: the batch fills in the rest.
        let named = |object: Uuid, object_type: &str, lookup: &ObjectLookup| Submission {
            action: NewAction {
                namespace: String::new(),
                object: String::new(),
                object_parents: vec![],
                object_type: object_type.to_string(),
                ..new_action("acme", object)
            },
            lookup: Some(lookup.clone()),
        };
        let in_globex_path = ObjectLookup {
            namespace: Some("globex".to_string()),
            ..acme.clone()
        };
        let loaded = Submission {
            action: new_action("acme", Uuid::new_v4()),
            lookup: None,
        };
        let batch = vec![
            named(mine.uuid, "service", &acme),
            named(Uuid::new_v4(), "service", &acme),
            named(theirs.uuid, "service", &acme),
            named(mine.uuid, "stack", &acme),
            named(mine.uuid, "service", &in_globex_path),
            named(gone.uuid, "service", &acme),
            loaded.clone(),
            named(mine.uuid, "service", &acme),
        ];
        let out = store.submit_batch(&batch).await.unwrap();
        assert_eq!(out.len(), batch.len());
        let first = out[0].as_ref().expect("its own object");
        assert_eq!(first.action.namespace, "acme");
        assert_eq!(first.action.object, mine.resource_uri);
        assert!(
            mine.parents.iter().all(|p| first.event.parents.contains(p)),
            "{:?}",
            first.event.parents
        );
        assert_eq!(first.action.state, InProgress);
        for (i, what) in [
            (1, "unknown"),
            (2, "another tenant's"),
            (3, "another type"),
            (4, "outside the path's namespace"),
        ] {
            assert!(matches!(&out[i], Err(Error::NotFound(_))), "{what}: {:?}", out[i]);
        }
        assert!(
            matches!(&out[5], Err(Error::Conflict(m)) if m.contains("terminated")),
            "{:?}",
            out[5]
        );
        assert_eq!(out[6].as_ref().unwrap().action.uuid, loaded.action.uuid);
        // The per-object rule still holds across the batch.
        assert_eq!(out[7].as_ref().unwrap().action.state, Pending);
        // A refused request recorded nothing.
        for (i, s) in batch.iter().enumerate() {
            let stored = store.get_action(Scope::All, s.action.uuid).await.unwrap();
            assert_eq!(stored.is_some(), out[i].is_ok(), "request {i}");
        }
        // Only refusals: nothing to record, every request answered.
        let refused = store
            .submit_batch(&[named(theirs.uuid, "service", &acme)])
            .await
            .unwrap();
        assert!(matches!(refused.as_slice(), [Err(Error::NotFound(_))]));
    }

    pub async fn a_batch_of_final_writes_is_fenced_per_action(store: &dyn Store) {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let first = store.submit_action(new_action("acme", a)).await.unwrap();
        let waiting = store.submit_action(new_action("acme", a)).await.unwrap();
        let other = store.submit_action(new_action("acme", b)).await.unwrap();
        let stale = store.submit_action(new_action("acme", c)).await.unwrap();
        let mut claims = vec![];
        for s in [&first, &other, &stale] {
            claims.push(
                store
                    .claim_action(s.action.uuid, "w1", LONG_LEASE)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        let batch = [
            Finish {
                uuid: first.action.uuid,
                to: Success,
                token: claims[0].token,
            },
            // A token that does not hold the lease: refused, neighbours unaffected.
            Finish {
                uuid: stale.action.uuid,
                to: Success,
                token: LeaseToken(Uuid::new_v4()),
            },
            Finish {
                uuid: other.action.uuid,
                to: Failed,
                token: claims[1].token,
            },
        ];
        let out = store.transition_many(&batch).await.unwrap();
        assert_eq!(out.len(), 3);
        let done = out[0].as_ref().unwrap();
        assert_eq!(done.action.state, Success);
        let promoted = done.promoted.as_ref().expect("the Pending action is promoted");
        assert_eq!(promoted.action.uuid, waiting.action.uuid);
        assert!(promoted.outbox_id.is_some());
        assert!(matches!(out[1], Err(Error::Transition(_))));
        let failed = out[2].as_ref().unwrap();
        assert_eq!(failed.action.state, Failed);
        assert!(failed.event.seq > done.event.seq);
        assert_eq!(state_of(store, stale.action.uuid).await, InProgress);
        assert_eq!(state_of(store, waiting.action.uuid).await, InProgress);
        // The stale one's real holder can still finish it.
        let later = store
            .transition_many(&[Finish {
                uuid: stale.action.uuid,
                to: Success,
                token: claims[2].token,
            }])
            .await
            .unwrap();
        assert_eq!(later[0].as_ref().unwrap().action.state, Success);
        assert!(store.transition_many(&[]).await.unwrap().is_empty());
    }

    // --- progress ----------------------------------------------------------

    pub async fn progress_is_written_in_one_batch_fenced_per_action_and_kept_when_final(store: &dyn Store) {
        use stevedore_core::progress::{Progress, ProgressWrite};
        let mut subs = vec![];
        for _ in 0..3 {
            subs.push(
                store
                    .submit_action(new_action("acme", Uuid::new_v4()))
                    .await
                    .unwrap(),
            );
        }
        let fresh = store
            .get_action(Scope::All, subs[0].action.uuid)
            .await
            .unwrap()
            .unwrap();
        assert_eq!((fresh.progress, fresh.progress_message.as_str()), (None, ""));
        let mut claims = vec![];
        for s in &subs {
            claims.push(
                store
                    .claim_action(s.action.uuid, "w1", LONG_LEASE)
                    .await
                    .unwrap()
                    .unwrap(),
            );
        }
        let write = |i: usize, token: LeaseToken, percent: u8, message: &str| ProgressWrite {
            uuid: subs[i].action.uuid,
            token,
            progress: Progress::new(percent, message).unwrap(),
        };
        let written = store
            .record_progress(&[
                write(0, claims[0].token, 42, "Copying layers"),
                // Not the holder's token: refused, neighbours unaffected.
                write(1, LeaseToken(Uuid::new_v4()), 90, "stale"),
                write(2, claims[2].token, 7, ""),
            ])
            .await
            .unwrap();
        let mut got: Vec<(Uuid, Option<u8>, String, ActionState)> = written
            .iter()
            .map(|w| {
                (
                    w.action.uuid,
                    w.action.progress,
                    w.action.progress_message.clone(),
                    w.action.state,
                )
            })
            .collect();
        got.sort_by_key(|g| g.0);
        let mut want = vec![
            (
                subs[0].action.uuid,
                Some(42),
                "Copying layers".to_string(),
                InProgress,
            ),
            (subs[2].action.uuid, Some(7), String::new(), InProgress),
        ];
        want.sort_by_key(|w| w.0);
        assert_eq!(got, want);
        // What it returns carries the object's parents, for the live report.
        let first = written
            .iter()
            .find(|w| w.action.uuid == subs[0].action.uuid)
            .unwrap();
        assert_eq!(
            first.object_parents,
            vec![format!("/api/app/v1/acme/stack/{}/", Uuid::nil())]
        );
        let read = |i: usize| {
            let uuid = subs[i].action.uuid;
            async move { store.get_action(Scope::All, uuid).await.unwrap().unwrap() }
        };
        assert_eq!(read(0).await.progress, Some(42));
        assert_eq!(read(0).await.to_wire().progress_message, "Copying layers");
        assert_eq!(
            read(1).await.progress,
            None,
            "a write without the lease changes nothing"
        );
        // A final state keeps the last report, and the lease is gone: no
        // more progress writes.
        store
            .transition_many(&[Finish {
                uuid: subs[0].action.uuid,
                to: Success,
                token: claims[0].token,
            }])
            .await
            .unwrap()
            .pop()
            .unwrap()
            .unwrap();
        let done = read(0).await;
        assert_eq!((done.state, done.progress), (Success, Some(42)));
        assert!(store
            .record_progress(&[write(0, claims[0].token, 99, "late")])
            .await
            .unwrap()
            .is_empty());
        assert_eq!(read(0).await.progress, Some(42));
        assert!(store.record_progress(&[]).await.unwrap().is_empty());
    }

    // --- admins and the workers registry ------------------------------------

    pub async fn admins_are_granted_and_revoked_with_the_credential_revision(store: &dyn Store) {
        let user = store.create_user("ann", &["acme".into()]).await.unwrap();
        assert!(!user.admin, "a new user is no admin");
        store.add_api_key("ann", "digest-1").await.unwrap();
        let before = store.credential_revision().await.unwrap();
        store.set_admin("ann", true).await.unwrap();
        assert!(store.get_user("ann").await.unwrap().unwrap().admin);
        let (found, _) = store.credentials("ann").await.unwrap().unwrap();
        assert!(found.admin, "authentication sees the flag");
        assert_eq!(found.namespaces, vec!["ann", "acme"]);
        let granted = store.credential_revision().await.unwrap();
        assert!(granted > before, "cached credentials must be re-read");
        store.set_admin("ann", false).await.unwrap();
        assert!(!store.get_user("ann").await.unwrap().unwrap().admin);
        assert!(store.credential_revision().await.unwrap() > granted);
        let err = store.set_admin("bob", true).await.unwrap_err();
        assert!(matches!(err, Error::NotFound(_)), "{err:?}");
        assert_eq!(store.get_user("bob").await.unwrap(), None);
    }

    fn worker(id: &str, started_secs_ago: i64) -> NewWorker {
        NewWorker {
            id: id.to_string(),
            host: "host-1".to_string(),
            pid: 4242,
            version: "1.2.3".to_string(),
            started_at: Utc::now().trunc_subsecs(6) - chrono::Duration::seconds(started_secs_ago),
            concurrency: 8,
        }
    }

    pub async fn workers_register_heartbeat_and_deregister(store: &dyn Store) {
        let (w1, w2) = (worker("host-1:1:aa", 20), worker("host-2:2:bb", 10));
        // Registered newest first; listed oldest start first.
        store.register_worker(&w2, LONG_LEASE).await.unwrap();
        store.register_worker(&w1, LONG_LEASE).await.unwrap();
        let page = store.live_workers(10, 0).await.unwrap();
        assert_eq!(page.total, 2);
        assert_eq!(page.items.len(), 2);
        assert_eq!(page.items[0].worker, w1, "every field round-trips");
        assert_eq!(page.items[1].worker, w2);
        assert!(page.items.iter().all(|w| w.running.is_empty()));
        assert!(page.items[0].expires_at > Utc::now() + chrono::Duration::seconds(500));

        let running = vec![Uuid::new_v4(), Uuid::new_v4()];
        assert!(store
            .worker_heartbeat(&w1.id, &running, LONG_LEASE)
            .await
            .unwrap());
        let one = store.live_worker(&w1.id).await.unwrap().unwrap();
        assert_eq!(one.running, running);
        assert!(one.heartbeat_at >= page.items[0].heartbeat_at);
        assert!(store.worker_heartbeat(&w1.id, &[], LONG_LEASE).await.unwrap());
        assert!(store
            .live_worker(&w1.id)
            .await
            .unwrap()
            .unwrap()
            .running
            .is_empty());
        assert!(
            !store
                .worker_heartbeat("nobody", &running, LONG_LEASE)
                .await
                .unwrap(),
            "a heartbeat without a row asks the worker to register again"
        );

        // Registering again (a restart under the same id) renews the row.
        let again = NewWorker {
            concurrency: 16,
            ..w1.clone()
        };
        store.register_worker(&again, LONG_LEASE).await.unwrap();
        assert_eq!(
            store
                .live_worker(&w1.id)
                .await
                .unwrap()
                .unwrap()
                .worker
                .concurrency,
            16
        );
        assert_eq!(store.live_workers(10, 0).await.unwrap().total, 2);

        let second = store.live_workers(1, 1).await.unwrap();
        assert_eq!(second.total, 2);
        assert_eq!(second.items.len(), 1);
        assert_eq!(second.items[0].worker.id, w2.id);

        let beyond = store.live_workers(10, 5).await.unwrap();
        assert!(beyond.items.is_empty());
        assert_eq!(beyond.total, 2, "a page past the end still counts");

        store.deregister_worker(&w1.id).await.unwrap();
        store.deregister_worker(&w1.id).await.unwrap();
        assert!(store.live_worker(&w1.id).await.unwrap().is_none());
        let left = store.live_workers(10, 0).await.unwrap();
        assert_eq!(left.total, 1);
        assert_eq!(left.items[0].worker.id, w2.id);
        assert_eq!(
            store.prune_workers().await.unwrap(),
            0,
            "a live worker is never pruned"
        );
    }

    pub async fn a_worker_whose_lease_passed_leaves_the_list_and_is_pruned(store: &dyn Store) {
        let (dead, live) = (worker("dead:1:aa", 5), worker("live:2:bb", 5));
        store.register_worker(&dead, SHORT_LEASE).await.unwrap();
        store.register_worker(&live, LONG_LEASE).await.unwrap();
        assert_eq!(store.live_workers(10, 0).await.unwrap().total, 2);
        tokio::time::sleep(PAST_SHORT_LEASE).await;
        let page = store.live_workers(10, 0).await.unwrap();
        assert_eq!(page.total, 1);
        assert_eq!(page.items[0].worker.id, live.id);
        assert!(store.live_worker(&dead.id).await.unwrap().is_none());
        assert_eq!(store.prune_workers().await.unwrap(), 1);
        assert_eq!(store.prune_workers().await.unwrap(), 0);
        assert!(!store.worker_heartbeat(&dead.id, &[], LONG_LEASE).await.unwrap());
        // A worker that was only slow registers again and is back.
        store.register_worker(&dead, LONG_LEASE).await.unwrap();
        assert_eq!(store.live_workers(10, 0).await.unwrap().total, 2);
    }
}

/// Instantiates every case for one backend, in a module named after it.
macro_rules! conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            conformance!(@cases $make;
                users_and_api_keys_round_trip,
                keys_are_listed_by_id_with_a_fingerprint_and_their_last_use,
                revoking_a_key_ends_it_and_its_sessions_only,
                sessions_resolve_until_they_expire_or_are_deleted,
                creating_an_existing_user_is_a_conflict,
                api_keys_need_an_existing_user_and_a_unique_digest,
                objects_are_visible_only_in_their_namespaces,
                submit_on_an_idle_object_dispatches_it,
                submit_on_a_busy_object_waits_as_pending,
                concurrent_submits_on_one_object_start_exactly_one,
                a_submitted_uuid_cannot_be_reused,
                completed_submissions_are_recorded_final_without_dispatch,
                finishing_an_action_promotes_the_oldest_pending_one,
                canceling_a_pending_action_does_not_promote_while_the_object_is_busy,
                illegal_transitions_are_refused_and_change_nothing,
                a_transition_of_an_unknown_action_is_not_found,
                actions_of_another_namespace_are_invisible,
                a_wrong_lease_token_is_refused,
                an_action_is_claimed_once_until_its_lease_expires,
                heartbeat_holds_only_with_the_current_token,
                a_batch_claim_takes_only_the_claimable_each_with_its_own_lease,
                log_lines_are_numbered_without_gaps_across_batches,
                reaping_requeues_below_max_claims_and_fails_at_max_claims,
                reaping_a_canceling_action_cancels_it,
                unclaimed_dispatches_are_redispatched,
                named_actions_are_redispatched_only_while_they_wait_for_a_worker,
                outbox_rows_are_marked_sent_idempotently,
                events_after_are_ordered_and_scoped,
                action_lists_filter_page_and_scope,
                objects_list_update_and_record_events,
                a_canceling_action_can_still_be_claimed_to_be_stopped,
                state_changes_write_the_system_log_and_filters_narrow_it,
                pruning_never_touches_an_unfinished_action,
                system_log_retention_is_per_tenant,
                unknown_users_have_no_credentials,
                a_batch_commits_together_with_the_per_object_rules,
                a_batch_looks_up_its_objects_and_answers_each_request,
                a_batch_of_final_writes_is_fenced_per_action,
                heartbeat_reports_a_cancel_under_way,
                releasing_a_lease_hands_the_action_back_at_once,
                an_object_change_records_its_event_log_entry_and_action_together,
                a_terminated_object_is_never_changed_again,
                cancel_moves_by_the_lifecycle_rule,
                progress_is_written_in_one_batch_fenced_per_action_and_kept_when_final,
                queue_places_number_each_objects_waiting_actions,
                admins_are_granted_and_revoked_with_the_credential_revision,
                workers_register_heartbeat_and_deregister,
                a_worker_whose_lease_passed_leaves_the_list_and_is_pruned,
            );
        }
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $make.await;
                super::cases::$case(harness.store.as_ref()).await;
            }
        )*
    };
}

conformance!(postgres, pg_store());
conformance!(sqlite, sqlite_store());

/// What only one backend, or the choice between them, has to show.
mod backends {
    use stevedore_core::store::Scope;
    use stevedore_core::Error;
    use uuid::Uuid;

    #[tokio::test]
    async fn an_in_memory_sqlite_store_keeps_its_data_across_calls() {
        let store = stevedore_store::connect("sqlite::memory:").await.unwrap();
        store.migrate().await.unwrap();
        store.ping().await.unwrap();
        store.create_user("ann", &[]).await.unwrap();
        assert!(store.get_user("ann").await.unwrap().is_some());
        let events = store.events_after(Scope::All, 0, 10).await.unwrap();
        assert!(events.is_empty());
        assert!(store
            .get_action(Scope::All, Uuid::new_v4())
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn connect_refuses_unknown_url_schemes_without_echoing_passwords() {
        let err = stevedore_store::connect("mysql://root:hunter2@localhost/db")
            .await
            .err()
            .expect("an error");
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

/// Webhooks: their rows, the relay's cursor, and the claims and fenced
/// outcomes of delivery rows.
mod webhook_cases {
    use std::time::Duration;
    use stevedore_core::state::ActionState;
    use stevedore_core::store::{Scope, Store};
    use stevedore_core::webhook::{Attempt, DeliveryStatus, NewDelivery, NewWebhook};
    use uuid::Uuid;

    fn new_webhook(namespace: &str) -> NewWebhook {
        NewWebhook {
            uuid: Uuid::new_v4(),
            namespace: namespace.into(),
            url: "https://hooks.example.com/in".into(),
            states: vec![ActionState::Success, ActionState::Failed],
            object_type: Some("service".into()),
            action: None,
            secret: "whsec_test".into(),
        }
    }

    fn delivery(webhook_id: i64, event_seq: i64) -> NewDelivery {
        NewDelivery {
            uuid: Uuid::new_v4(),
            webhook_id,
            event_seq,
            action_uuid: Uuid::new_v4(),
            state: ActionState::Success,
            body: format!("{{\"seq\":{event_seq}}}"),
        }
    }

    pub async fn webhooks_are_scoped_saved_and_deleted(store: &dyn Store) {
        let alice = vec!["alice".to_string()];
        let bob = vec!["bob".to_string()];
        let created = store.create_webhook(&new_webhook("alice")).await.unwrap();
        assert_eq!(created.after_seq, store.last_event_seq().await.unwrap());
        assert_eq!(created.states, [ActionState::Success, ActionState::Failed]);
        assert_eq!(created.secret, "whsec_test");
        let seen = store
            .get_webhook(Scope::Namespaces(&alice), created.uuid)
            .await
            .unwrap();
        assert_eq!(seen.as_ref(), Some(&created));
        assert!(store
            .get_webhook(Scope::Namespaces(&bob), created.uuid)
            .await
            .unwrap()
            .is_none());
        store.create_webhook(&new_webhook("bob")).await.unwrap();
        let page = store
            .list_webhooks(Scope::Namespaces(&alice), 10, 0)
            .await
            .unwrap();
        assert_eq!((page.total, page.items.len()), (1, 1));
        assert_eq!(store.list_webhooks(Scope::All, 10, 0).await.unwrap().total, 2);
        assert_eq!(
            store.list_webhooks(Scope::All, 1, 1).await.unwrap().items.len(),
            1
        );

        let mut changed = created.clone();
        changed.url = "https://other.example.com/".into();
        changed.states = vec![ActionState::Canceled];
        changed.object_type = None;
        changed.action = Some("start".into());
        assert!(store.save_webhook(&changed).await.unwrap());
        let again = store
            .get_webhook(Scope::All, created.uuid)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again, changed);
        let targets = store.webhook_targets().await.unwrap();
        assert_eq!(targets.len(), 2);
        assert!(targets.contains(&changed.target()));

        let cursor = store.webhook_cursor().await.unwrap();
        assert!(store
            .advance_webhook_cursor(cursor, cursor + 1, &[delivery(created.id, cursor + 1)])
            .await
            .unwrap());
        assert!(store.delete_webhook(created.uuid).await.unwrap());
        assert!(!store.delete_webhook(created.uuid).await.unwrap());
        assert!(!store.save_webhook(&changed).await.unwrap());
        assert!(store
            .get_webhook(Scope::All, created.uuid)
            .await
            .unwrap()
            .is_none());
        assert_eq!(
            store.webhook_deliveries(created.id, 10, 0).await.unwrap().total,
            0
        );
    }

    pub async fn the_cursor_moves_once_and_deliveries_are_unique_per_event(store: &dyn Store) {
        let hook = store.create_webhook(&new_webhook("alice")).await.unwrap();
        let start = store.webhook_cursor().await.unwrap();
        let first = delivery(hook.id, start + 1);
        assert!(store
            .advance_webhook_cursor(start, start + 5, std::slice::from_ref(&first))
            .await
            .unwrap());
        // A second relay that read the same cursor moves nothing.
        assert!(!store
            .advance_webhook_cursor(start, start + 7, &[delivery(hook.id, start + 2)])
            .await
            .unwrap());
        assert_eq!(store.webhook_cursor().await.unwrap(), start + 5);
        // The same (webhook, event) again is skipped; a deleted webhook's too.
        let gone = store.create_webhook(&new_webhook("alice")).await.unwrap();
        store.delete_webhook(gone.uuid).await.unwrap();
        assert!(store
            .advance_webhook_cursor(
                start + 5,
                start + 6,
                &[
                    delivery(hook.id, start + 1),
                    delivery(hook.id, start + 6),
                    delivery(gone.id, start + 6)
                ]
            )
            .await
            .unwrap());
        let log = store.webhook_deliveries(hook.id, 10, 0).await.unwrap();
        assert_eq!(log.total, 2);
        let seqs: Vec<i64> = log.items.iter().map(|d| d.event_seq).collect();
        assert_eq!(seqs, [start + 6, start + 1], "newest first");
        let d = &log.items[1];
        assert_eq!(
            (d.uuid, d.action_uuid, d.state),
            (first.uuid, first.action_uuid, ActionState::Success)
        );
        assert_eq!((d.status, d.attempts), (DeliveryStatus::Pending, 0));
        assert!(d.next_attempt_at.is_some() && d.delivered_at.is_none());
    }

    pub async fn due_deliveries_are_claimed_once_and_outcomes_are_fenced(store: &dyn Store) {
        let long = Duration::from_secs(600);
        let hook = store.create_webhook(&new_webhook("alice")).await.unwrap();
        let other = store.create_webhook(&new_webhook("alice")).await.unwrap();
        let start = store.webhook_cursor().await.unwrap();
        store
            .advance_webhook_cursor(
                start,
                start + 2,
                &[delivery(hook.id, start + 1), delivery(other.id, start + 2)],
            )
            .await
            .unwrap();
        // Skipped webhooks are left for later.
        let claimed = store.claim_deliveries(10, long, &[other.id]).await.unwrap();
        assert_eq!(claimed.len(), 1);
        let c = &claimed[0];
        assert_eq!((c.webhook_id, c.attempt), (hook.id, 1));
        assert_eq!(
            (c.url.as_str(), c.secret.as_str()),
            ("https://hooks.example.com/in", "whsec_test")
        );
        assert_eq!(c.body, format!("{{\"seq\":{}}}", start + 1));
        // Claimed: not due again while its lease lasts.
        let rest = store.claim_deliveries(10, long, &[]).await.unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].webhook_id, other.id);
        assert!(store.claim_deliveries(10, long, &[]).await.unwrap().is_empty());

        // A failure with a retry makes it due again (at once here).
        let failed = Attempt::Failed {
            status: Some(500),
            error: "HTTP 500".into(),
            retry_in: Some(Duration::ZERO),
        };
        assert!(store.record_attempt(c.id, 1, &failed).await.unwrap());
        let log = store.webhook_deliveries(hook.id, 10, 0).await.unwrap();
        assert_eq!(log.items[0].last_status_code, Some(500));
        assert_eq!(log.items[0].last_error.as_deref(), Some("HTTP 500"));
        let second = store
            .claim_deliveries(10, Duration::from_secs(1), &[])
            .await
            .unwrap();
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].attempt, 2);
        // Its lease runs out: a third attempt takes it, and the second's
        // outcome, come late, writes nothing.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let third = store.claim_deliveries(10, long, &[]).await.unwrap();
        assert_eq!(third.len(), 1);
        assert_eq!(third[0].attempt, 3);
        assert!(!store
            .record_attempt(c.id, 2, &Attempt::Delivered { status: 200 })
            .await
            .unwrap());
        assert!(store
            .record_attempt(c.id, 3, &Attempt::Delivered { status: 204 })
            .await
            .unwrap());
        let d = store
            .webhook_deliveries(hook.id, 10, 0)
            .await
            .unwrap()
            .items
            .remove(0);
        assert_eq!(
            (d.status, d.attempts, d.last_status_code),
            (DeliveryStatus::Delivered, 3, Some(204))
        );
        assert!(d.delivered_at.is_some() && d.next_attempt_at.is_none() && d.last_error.is_none());
        assert!(
            !store.record_attempt(c.id, 3, &failed).await.unwrap(),
            "a delivered row is final"
        );

        // Out of attempts: failed for good, never claimed again.
        let gave_up = Attempt::Failed {
            status: None,
            error: "connection refused".into(),
            retry_in: None,
        };
        assert!(store.record_attempt(rest[0].id, 1, &gave_up).await.unwrap());
        let d = store
            .webhook_deliveries(other.id, 10, 0)
            .await
            .unwrap()
            .items
            .remove(0);
        assert_eq!((d.status, d.last_status_code), (DeliveryStatus::Failed, None));
        assert!(d.next_attempt_at.is_none());
        assert!(store.claim_deliveries(10, long, &[]).await.unwrap().is_empty());

        // Retention takes the finished ones only.
        let cursor = store.webhook_cursor().await.unwrap();
        store
            .advance_webhook_cursor(cursor, cursor + 1, &[delivery(hook.id, cursor + 1)])
            .await
            .unwrap();
        assert_eq!(
            store.prune_deliveries(Duration::from_secs(3600)).await.unwrap(),
            0
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(store.prune_deliveries(Duration::ZERO).await.unwrap(), 2);
        let left = store.webhook_deliveries(hook.id, 10, 0).await.unwrap();
        assert_eq!(left.total, 1);
        assert_eq!(left.items[0].status, DeliveryStatus::Pending);
    }
}

macro_rules! webhook_conformance {
    ($backend:ident, $make:expr; $($case:ident),* $(,)?) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let harness = $make.await;
                    super::super::webhook_cases::$case(harness.store.as_ref()).await;
                }
            )*
        }
    };
}

mod webhooks {
    use super::*;
    webhook_conformance!(postgres, pg_store();
        webhooks_are_scoped_saved_and_deleted,
        the_cursor_moves_once_and_deliveries_are_unique_per_event,
        due_deliveries_are_claimed_once_and_outcomes_are_fenced,
    );
    webhook_conformance!(sqlite, sqlite_store();
        webhooks_are_scoped_saved_and_deleted,
        the_cursor_moves_once_and_deliveries_are_unique_per_event,
        due_deliveries_are_claimed_once_and_outcomes_are_fenced,
    );
}
