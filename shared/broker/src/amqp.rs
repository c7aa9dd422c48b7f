//! The RabbitMQ backend of [`Broker`], built on lapin and deadpool.
//!
//! Connections come from two deadpool pools: one for publishing and one
//! for consuming, so that RabbitMQ's flow control on publishers never stalls
//! the acks of consumers. Publishing goes through pools of long-lived
//! channels: one in confirm mode (jobs and control messages) and one without
//! confirms (updates, best effort). Every consumer and subscriber gets a
//! channel of its own; dropping its stream (and every acker handed out by it)
//! closes that channel, so RabbitMQ requeues whatever it left unacknowledged.
//!
//! Connections are named `<prefix>-publish` and `<prefix>-consume`, as RabbitMQ's
//! management tools show them.
//!
//! On a cluster, the URL may list several nodes, comma-separated: each new
//! connection tries them in turn, starting one further along each time (a
//! pool's first connection at a random node), so
//! connections spread over the nodes and a stopped node is skipped. Jobs may
//! be spread over several quorum queues ([`BrokerNames::job_queues`]):
//! publishes rotate over them and a consumer takes from all of them.

use async_trait::async_trait;
use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use futures::stream::{BoxStream, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::publisher_confirm::{Confirmation, PublisherConfirm};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, ConnectionProperties, ConnectionStatus, ExchangeKind};
use serde::de::DeserializeOwned;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use stevedore_core::broker::{
    Acker, Broker, BrokerNames, ControlStream, DeadLetter, DeadLetterStream, JobDelivery, JobStream,
    UpdateStream, JOB_DELIVERY_LIMIT,
};
use stevedore_core::messages::{Control, JobMessage, Update};
use stevedore_core::{Error, Result};
use tracing::warn;

/// How long `connect` (and any later connection attempt) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Publisher confirms kept in flight by one `publish_jobs` call.
const MAX_CONFIRMS_IN_FLIGHT: usize = 1024;
/// Connections used for publishing.
const PUBLISH_CONNECTIONS: usize = 2;
/// Connections shared by consumers and subscribers.
const CONSUME_CONNECTIONS: usize = 2;
/// Publishing channels kept per pool.
const PUBLISH_CHANNELS: usize = 16;
/// How long a publish (with its confirm, for jobs and control messages) may
/// take by default before it fails: a broker that stalls must not hang the
/// requests and workers that publish ([`AmqpBroker::with_publish_timeout`]).
pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// Publishing connections whose status is remembered for
/// [`Broker::blocked`] (blocking is node-wide: any of them tells).
const WATCHED_CONNECTIONS: usize = 8;

const JSON: &str = "application/json";

/// A [`Broker`] on RabbitMQ. See the module documentation for how connections
/// and channels are used.
pub struct AmqpBroker {
    names: BrokerNames,
    publish_connections: ConnectionPool,
    consume_connections: ConnectionPool,
    confirm_channels: managed::Pool<ChannelManager>,
    plain_channels: managed::Pool<ChannelManager>,
    publish_timeout: Duration,
    watched: Watched,
    /// The job queue the next job message goes to, modulo their number.
    next_queue: AtomicUsize,
}

/// A pool of AMQP connections to the nodes of one URL list.
type ConnectionPool = managed::Pool<ConnectionManager>;

/// The statuses of the publishing connections channels were made on, newest
/// last: lapin records there whether RabbitMQ sent `connection.blocked`.
type Watched = Arc<Mutex<VecDeque<ConnectionStatus>>>;

impl std::fmt::Debug for AmqpBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpBroker")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl AmqpBroker {
    /// Connects to RabbitMQ at `url` (`amqp://user:password@host:port/vhost`,
    /// or several such URLs of one cluster's nodes, comma-separated) and
    /// uses the topology named by `names`.
    ///
    /// One connection is opened at once, so an unreachable broker or wrong
    /// credentials fail here, with an error naming the URL without its
    /// password. Further connections are opened on demand and replaced when
    /// they break, each on the next node of the list that answers.
    pub async fn connect(url: &str, names: BrokerNames) -> Result<Self> {
        let shown = redact_url(url);
        let urls = split_urls(url)?;
        let publish_connections = connection_pool(&urls, &names, "publish", PUBLISH_CONNECTIONS)?;
        let consume_connections = connection_pool(&urls, &names, "consume", CONSUME_CONNECTIONS)?;
        let conn = publish_connections
            .get()
            .await
            .map_err(|e| Error::Broker(format!("cannot connect to RabbitMQ at {shown}: {e}")))?;
        drop(conn);
        let watched = Watched::default();
        let confirm_channels = channel_pool(&publish_connections, true, &watched)?;
        let plain_channels = channel_pool(&publish_connections, false, &watched)?;
        Ok(AmqpBroker {
            names,
            publish_connections,
            consume_connections,
            confirm_channels,
            plain_channels,
            publish_timeout: DEFAULT_PUBLISH_TIMEOUT,
            watched,
            next_queue: AtomicUsize::new(0),
        })
    }

    /// Sets how long one publish — getting a channel, sending, and waiting
    /// for the confirms — may take before it fails (default
    /// [`DEFAULT_PUBLISH_TIMEOUT`]). What was committed stays in the outbox
    /// and the relay publishes it later.
    pub fn with_publish_timeout(mut self, timeout: Duration) -> Self {
        self.publish_timeout = timeout;
        self
    }

    /// Whether RabbitMQ told a live publishing connection that it blocks
    /// publishers (a memory or disk alarm).
    fn is_blocked(&self) -> bool {
        self.watched
            .lock()
            .map(|w| w.iter().any(|s| s.connected() && s.blocked()))
            .unwrap_or(false)
    }

    /// Runs one publish on a channel of `pool` within the publish timeout;
    /// refuses at once while RabbitMQ blocks publishers. A channel whose
    /// publish failed or ran out of time (it may still owe confirms) is
    /// never reused.
    async fn publish_within<'a, F, Fut>(
        &'a self,
        what: &str,
        pool: &'a managed::Pool<ChannelManager>,
        publish: F,
    ) -> Result<()>
    where
        F: FnOnce(managed::Object<ChannelManager>) -> Fut,
        Fut: std::future::Future<Output = (managed::Object<ChannelManager>, Result<()>)>,
    {
        if self.is_blocked() {
            return Err(blocked_error(what));
        }
        let deadline = tokio::time::Instant::now() + self.publish_timeout;
        let channel = match tokio::time::timeout_at(deadline, pool.get()).await {
            Ok(c) => c.map_err(pool_error)?,
            Err(_) => return Err(self.timeout_error(what)),
        };
        // The channel travels with the publish and comes back with its
        // outcome, so a publish cut short by the deadline drops it here
        // instead of returning it to the pool.
        match tokio::time::timeout_at(deadline, publish(channel)).await {
            Ok((channel, Ok(()))) => {
                drop(channel);
                Ok(())
            }
            Ok((channel, Err(e))) => {
                let _ = managed::Object::take(channel);
                Err(e)
            }
            Err(_) if self.is_blocked() => Err(blocked_error(what)),
            Err(_) => Err(self.timeout_error(what)),
        }
    }

    /// Runs `op` (a one-off on a scratch channel) within the publish
    /// timeout.
    async fn within<T>(&self, what: &str, op: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(self.publish_timeout, op)
            .await
            .unwrap_or_else(|_| Err(self.timeout_error(what)))
    }

    fn timeout_error(&self, what: &str) -> Error {
        Error::Broker(format!(
            "RabbitMQ did not take {what} within {} (publish_timeout)",
            humantime::format_duration(self.publish_timeout)
        ))
    }

    /// The names this broker uses.
    pub fn names(&self) -> &BrokerNames {
        &self.names
    }

    /// How many messages wait in the dead-letter queue.
    pub async fn dead_letter_depth(&self) -> Result<u32> {
        self.queue_depth(&self.names.dead_letter_queue()).await
    }

    /// How many jobs wait in the jobs queues, ready for delivery
    /// (unacknowledged deliveries are not counted).
    pub async fn jobs_depth(&self) -> Result<u32> {
        let mut total = 0u32;
        for queue in self.names.job_queues() {
            total = total.saturating_add(self.queue_depth(&queue).await?);
        }
        Ok(total)
    }

    /// Deletes the queues and exchanges of this prefix, with their messages.
    /// Missing ones are not an error. Meant for tests and decommissioning.
    pub async fn delete_topology(&self) -> Result<()> {
        let mut first_error = None;
        let mut channel = self.scratch_channel().await?;
        let mut queues = self.names.job_queues();
        queues.push(self.names.dead_letter_queue());
        for queue in queues {
            if !channel.status().connected() {
                channel = self.scratch_channel().await?;
            }
            if let Err(e) = channel.queue_delete(&queue, QueueDeleteOptions::default()).await {
                warn!(queue = %queue, error = %e, "cannot delete queue");
                first_error.get_or_insert(Error::from(e));
            }
        }
        for exchange in [
            self.names.dead_letter_exchange(),
            self.names.updates_exchange(),
            self.names.control_exchange(),
        ] {
            if !channel.status().connected() {
                channel = self.scratch_channel().await?;
            }
            if let Err(e) = channel
                .exchange_delete(&exchange, ExchangeDeleteOptions::default())
                .await
            {
                warn!(exchange = %exchange, error = %e, "cannot delete exchange");
                first_error.get_or_insert(Error::from(e));
            }
        }
        close_quietly(channel).await;
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn queue_depth(&self, queue: &str) -> Result<u32> {
        if self.is_blocked() {
            return Err(blocked_error("a queue depth query"));
        }
        self.within("a queue depth query", async {
            let channel = self.scratch_channel().await?;
            let declared = channel
                .queue_declare(
                    queue,
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            close_quietly(channel).await;
            Ok(declared.message_count())
        })
        .await
    }

    /// A fresh channel for one-off operations whose failure closes the channel
    /// (passive declares, deletes).
    async fn scratch_channel(&self) -> Result<Channel> {
        let conn = self.publish_connections.get().await.map_err(pool_error)?;
        Ok(conn.create_channel().await?)
    }

    /// A fresh channel on a consuming connection, for one consumer.
    async fn consumer_channel(&self) -> Result<Channel> {
        let conn = self.consume_connections.get().await.map_err(pool_error)?;
        Ok(conn.create_channel().await?)
    }

    /// A consumer of one job queue, on a channel of its own.
    async fn consume_job_queue(&self, queue: &str, prefetch: u16) -> Result<JobStream> {
        self.consume_queue(
            queue,
            prefetch,
            Undecodable::DeadLetter,
            |job, delivery, acker| JobDelivery {
                job,
                redelivered: delivery.redelivered,
                acker,
            },
        )
        .await
    }

    /// A consumer of `queue` (jobs or dead letters), on a channel of its own:
    /// each job message becomes an item made by `item`, with the acker that
    /// settles it (and keeps the channel open until then); a message that
    /// is no job is settled as `undecodable` says and skipped.
    async fn consume_queue<I: Send + 'static>(
        &self,
        queue: &str,
        prefetch: u16,
        undecodable: Undecodable,
        item: fn(JobMessage, &lapin::message::Delivery, Box<dyn Acker>) -> I,
    ) -> Result<BoxStream<'static, Result<I>>> {
        let channel = self.consumer_channel().await?;
        channel.basic_qos(prefetch, BasicQosOptions::default()).await?;
        let consumer = channel
            .basic_consume(queue, "", BasicConsumeOptions::default(), FieldTable::default())
            .await?;
        let stream = futures::stream::unfold(Some((consumer, channel)), move |state| async move {
            let (mut consumer, channel) = state?;
            loop {
                match consumer.next().await {
                    None => return None,
                    Some(Err(e)) => return Some((Err(Error::from(e)), None)),
                    Some(Ok(delivery)) => match serde_json::from_slice::<JobMessage>(&delivery.data) {
                        Ok(job) => {
                            let acker = Box::new(AmqpAcker {
                                acker: delivery.acker.clone(),
                                _channel: channel.clone(),
                            });
                            let next = item(job, &delivery, acker);
                            return Some((Ok(next), Some((consumer, channel))));
                        }
                        Err(e) => undecodable.settle(&delivery, &e).await,
                    },
                }
            }
        });
        Ok(stream.boxed())
    }

    /// Subscribes to `exchange` through an exclusive, auto-deleted,
    /// server-named queue bound with `binding_key`, without acks.
    async fn subscribe<T>(&self, exchange: String, binding_key: &str) -> Result<BoxStream<'static, Result<T>>>
    where
        T: DeserializeOwned + Send + 'static,
    {
        let channel = self.consumer_channel().await?;
        let queue = channel
            .queue_declare(
                "",
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let queue = queue.name().as_str().to_string();
        channel
            .queue_bind(
                &queue,
                &exchange,
                binding_key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                &queue,
                "",
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let stream = futures::stream::unfold(Some((consumer, channel, exchange)), |state| async move {
            let (mut consumer, channel, exchange) = state?;
            loop {
                match consumer.next().await {
                    None => return None,
                    Some(Err(e)) => return Some((Err(Error::from(e)), None)),
                    Some(Ok(delivery)) => match serde_json::from_slice::<T>(&delivery.data) {
                        Ok(message) => return Some((Ok(message), Some((consumer, channel, exchange)))),
                        Err(e) => warn!(
                            exchange = %exchange,
                            error = %e,
                            "skipping undecodable message"
                        ),
                    },
                }
            }
        });
        Ok(stream.boxed())
    }
}

#[async_trait]
impl Broker for AmqpBroker {
    async fn declare(&self) -> Result<()> {
        let channel = self.scratch_channel().await?;
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let dlx = self.names.dead_letter_exchange();
        let dead = self.names.dead_letter_queue();
        channel
            .exchange_declare(
                &dlx,
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_declare(&dead, durable_queue, FieldTable::default())
            .await?;
        channel
            .queue_bind(
                &dead,
                &dlx,
                "",
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        let mut jobs_args = FieldTable::default();
        jobs_args.insert(
            ShortString::from("x-queue-type"),
            AMQPValue::LongString(LongString::from("quorum")),
        );
        jobs_args.insert(
            ShortString::from("x-delivery-limit"),
            AMQPValue::LongLongInt(i64::from(JOB_DELIVERY_LIMIT)),
        );
        jobs_args.insert(
            ShortString::from("x-dead-letter-exchange"),
            AMQPValue::LongString(LongString::from(dlx.as_str())),
        );
        for (i, queue) in self.names.job_queues().into_iter().enumerate() {
            let mut args = jobs_args.clone();
            if let Some(locator) = self.names.job_queue_leader_locator(i as u16) {
                args.insert(
                    ShortString::from("x-queue-leader-locator"),
                    AMQPValue::LongString(LongString::from(locator)),
                );
            }
            channel.queue_declare(&queue, durable_queue, args).await?;
        }

        channel
            .exchange_declare(
                &self.names.updates_exchange(),
                ExchangeKind::Topic,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                &self.names.control_exchange(),
                ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        close_quietly(channel).await;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        // RabbitMQ told us it blocks publishers: it answers, and no channel
        // would open on a blocked connection (reported by `blocked`).
        if self.is_blocked() {
            return Ok(());
        }
        self.within("a ping", async {
            let channel = self.scratch_channel().await?;
            close_quietly(channel).await;
            Ok(())
        })
        .await
    }

    async fn publish_jobs(&self, jobs: &[JobMessage]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        // Rotate over the job queues, one message each.
        let count = usize::from(self.names.queue_count());
        let first = self.next_queue.fetch_add(jobs.len(), Ordering::Relaxed);
        let queues: Vec<String> = (0..jobs.len())
            .map(|i| self.names.job_queue(((first + i) % count) as u16))
            .collect();
        self.publish_within("the jobs", &self.confirm_channels, |channel| async move {
            let outcome = publish_confirmed(&channel, jobs, &queues).await;
            (channel, outcome)
        })
        .await
    }

    async fn consume_jobs(&self, prefetch: u16) -> Result<JobStream> {
        // One channel and consumer per queue, each with its share of the
        // prefetch; the streams are merged, and the merge ends as soon as
        // any of them ends, so that the worker subscribes to all again
        // instead of going on with fewer queues than it should.
        let queues = self.names.job_queues();
        if queues.len() == 1 {
            return self.consume_job_queue(&queues[0], prefetch).await;
        }
        let n = queues.len() as u16;
        let mut streams = Vec::with_capacity(queues.len());
        for (i, queue) in queues.iter().enumerate() {
            // The prefetch split exactly (the first `prefetch % n` queues
            // take one more); at least one each, so a worker whose prefetch
            // is below the number of queues holds one job per queue.
            let share = (prefetch / n + u16::from((i as u16) < prefetch % n)).max(1);
            let stream = self.consume_job_queue(queue, share).await?;
            streams.push(stream.map(Some).chain(futures::stream::iter([None])));
        }
        Ok(futures::stream::select_all(streams)
            .take_while(|item| std::future::ready(item.is_some()))
            .filter_map(std::future::ready)
            .boxed())
    }

    async fn publish_update(&self, update: &Update) -> Result<()> {
        let payload = serde_json::to_vec(update)?;
        let properties = BasicProperties::default()
            .with_content_type(ShortString::from(JSON))
            .with_delivery_mode(1);
        let exchange = self.names.updates_exchange();
        let key = update.routing_key();
        self.publish_within("an update", &self.plain_channels, |channel| async move {
            let sent = channel
                .basic_publish(
                    &exchange,
                    &key,
                    BasicPublishOptions::default(),
                    &payload,
                    properties,
                )
                .await;
            // Not in confirm mode: this resolves at once; awaiting it keeps
            // lapin from storing it for a later `wait_for_confirms`.
            let outcome = match sent {
                Ok(confirm) => {
                    let _ = confirm.await;
                    Ok(())
                }
                Err(e) => Err(e.into()),
            };
            (channel, outcome)
        })
        .await
    }

    async fn subscribe_updates(&self) -> Result<UpdateStream> {
        self.subscribe(self.names.updates_exchange(), "#").await
    }

    async fn publish_control(&self, msg: &Control) -> Result<()> {
        let payload = serde_json::to_vec(msg)?;
        let properties = BasicProperties::default()
            .with_content_type(ShortString::from(JSON))
            .with_delivery_mode(1);
        let exchange = self.names.control_exchange();
        self.publish_within(
            "a control message",
            &self.confirm_channels,
            |channel| async move {
                let outcome = async {
                    let confirm = channel
                        .basic_publish(
                            &exchange,
                            "",
                            BasicPublishOptions::default(),
                            &payload,
                            properties,
                        )
                        .await?;
                    match confirm.await? {
                        Confirmation::Ack(_) => Ok(()),
                        Confirmation::Nack(_) => Err(Error::Broker(
                            "RabbitMQ refused (nacked) a control message".to_string(),
                        )),
                        Confirmation::NotRequested => Err(not_confirming()),
                    }
                }
                .await;
                (channel, outcome)
            },
        )
        .await
    }

    fn blocked(&self) -> Option<String> {
        self.is_blocked().then(|| {
            "RabbitMQ blocks publishers (a memory or disk alarm): new jobs wait in the outbox".to_string()
        })
    }

    async fn subscribe_control(&self) -> Result<ControlStream> {
        self.subscribe(self.names.control_exchange(), "").await
    }

    async fn jobs_depth(&self) -> Result<u64> {
        AmqpBroker::jobs_depth(self).await.map(u64::from)
    }

    async fn consume_dead_letters(&self, prefetch: u16) -> Result<DeadLetterStream> {
        self.consume_queue(
            &self.names.dead_letter_queue(),
            prefetch,
            Undecodable::Drop,
            |job, delivery, acker| DeadLetter {
                job,
                reason: death_reason(delivery.properties.headers().as_ref()),
                acker,
            },
        )
        .await
    }
}

/// What a consumer does with a message that is no job message.
#[derive(Clone, Copy)]
enum Undecodable {
    /// Reject it to the dead-letter queue (a job queue's consumer).
    DeadLetter,
    /// Ack it away (the dead-letter queue's consumer: nowhere further).
    Drop,
}

impl Undecodable {
    async fn settle(self, delivery: &lapin::message::Delivery, error: &serde_json::Error) {
        let bytes = delivery.data.len();
        match self {
            Undecodable::DeadLetter => {
                warn!(error = %error, bytes, "rejecting undecodable job message to the dead-letter queue");
                if let Err(e) = delivery.acker.reject(BasicRejectOptions { requeue: false }).await {
                    warn!(error = %e, "cannot reject undecodable job message");
                }
            }
            Undecodable::Drop => {
                warn!(error = %error, bytes, "dropping an undecodable dead letter");
                if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                    warn!(error = %e, "cannot drop an undecodable dead letter");
                }
            }
        }
    }
}

/// Why RabbitMQ dead-lettered a message, from its newest `x-death` entry:
/// `"delivery_limit"` (with the queue's delivery count when present) or
/// `"rejected"`, …; `"unknown"` without the header.
fn death_reason(headers: Option<&FieldTable>) -> String {
    let newest = headers
        .and_then(|h| h.inner().get("x-death"))
        .and_then(|v| match v {
            AMQPValue::FieldArray(a) => a.as_slice().first().cloned(),
            _ => None,
        });
    let Some(AMQPValue::FieldTable(death)) = newest else {
        return "unknown".to_string();
    };
    let reason = match death.inner().get("reason") {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_string(),
        _ => "unknown".to_string(),
    };
    if reason == "delivery_limit" {
        format!("{reason}: delivered more than {JOB_DELIVERY_LIMIT} times")
    } else {
        reason
    }
}

/// Publishes each of `jobs` to its queue in `queues` with at most
/// [`MAX_CONFIRMS_IN_FLIGHT`] confirms outstanding, then awaits every
/// confirm. Jobs that were nacked or returned as unroutable make the whole
/// call fail (after all confirms are in).
async fn publish_confirmed(channel: &Channel, jobs: &[JobMessage], queues: &[String]) -> Result<()> {
    let mut pending: VecDeque<PublisherConfirm> = VecDeque::new();
    let mut failed = ConfirmFailures::default();
    for (job, queue) in jobs.iter().zip(queues) {
        let payload = serde_json::to_vec(job)?;
        let properties = BasicProperties::default()
            .with_content_type(ShortString::from(JSON))
            .with_delivery_mode(2)
            .with_message_id(ShortString::from(
                job.actions.first().map(|a| a.to_string()).unwrap_or_default(),
            ));
        let confirm = channel
            .basic_publish(
                "",
                queue,
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &payload,
                properties,
            )
            .await?;
        pending.push_back(confirm);
        if pending.len() >= MAX_CONFIRMS_IN_FLIGHT {
            if let Some(oldest) = pending.pop_front() {
                failed.record(oldest.await?)?;
            }
        }
    }
    for confirm in pending {
        failed.record(confirm.await?)?;
    }
    failed.into_result(jobs.len(), queues.first().map_or("", String::as_str))
}

/// Counts the publishes RabbitMQ did not take.
#[derive(Default)]
struct ConfirmFailures {
    nacked: usize,
    unroutable: usize,
}

impl ConfirmFailures {
    fn record(&mut self, confirmation: Confirmation) -> Result<()> {
        match confirmation {
            Confirmation::Ack(None) => {}
            Confirmation::Ack(Some(_)) => self.unroutable += 1,
            Confirmation::Nack(_) => self.nacked += 1,
            Confirmation::NotRequested => return Err(not_confirming()),
        }
        Ok(())
    }

    fn into_result(self, total: usize, queue: &str) -> Result<()> {
        if self.nacked == 0 && self.unroutable == 0 {
            return Ok(());
        }
        Err(Error::Broker(format!(
            "{} of {total} jobs not accepted by RabbitMQ ({} nacked, {} unroutable; is queue {queue} declared?)",
            self.nacked + self.unroutable,
            self.nacked,
            self.unroutable,
        )))
    }
}

fn blocked_error(what: &str) -> Error {
    Error::Broker(format!(
        "RabbitMQ blocks publishers (a memory or disk alarm): {what} not sent"
    ))
}

fn not_confirming() -> Error {
    Error::Broker("publishing channel is not in confirm mode".to_string())
}

/// Settles one delivery. It keeps the consumer's channel open, so a delivery
/// can still be settled after its stream was dropped (graceful shutdown).
struct AmqpAcker {
    acker: lapin::acker::Acker,
    _channel: Channel,
}

#[async_trait]
impl Acker for AmqpAcker {
    async fn ack(&self) -> Result<()> {
        Ok(self.acker.ack(BasicAckOptions::default()).await?)
    }

    async fn requeue(&self) -> Result<()> {
        Ok(self
            .acker
            .nack(BasicNackOptions {
                requeue: true,
                ..BasicNackOptions::default()
            })
            .await?)
    }

    async fn reject(&self) -> Result<()> {
        Ok(self.acker.reject(BasicRejectOptions { requeue: false }).await?)
    }
}

/// Opens AMQP connections, each to the next node of the list that answers.
struct ConnectionManager {
    urls: Vec<String>,
    properties: ConnectionProperties,
    /// Where the next connection starts trying, modulo the list's length.
    next: AtomicUsize,
}

impl managed::Manager for ConnectionManager {
    type Type = lapin::Connection;
    type Error = Error;

    async fn create(&self) -> Result<lapin::Connection> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        // The whole attempt must fit in the pool's create timeout.
        let per_node = (CONNECT_TIMEOUT / self.urls.len() as u32).max(Duration::from_secs(1));
        let mut failures = Vec::new();
        for i in 0..self.urls.len() {
            let url = &self.urls[(start + i) % self.urls.len()];
            match tokio::time::timeout(per_node, lapin::Connection::connect(url, self.properties.clone()))
                .await
            {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(e)) => failures.push(format!("{}: {e}", redact_url(url))),
                Err(_) => failures.push(format!("{}: no answer within {per_node:?}", redact_url(url))),
            }
        }
        Err(Error::Broker(failures.join("; ")))
    }

    async fn recycle(&self, conn: &mut lapin::Connection, _: &Metrics) -> RecycleResult<Error> {
        if conn.status().connected() {
            Ok(())
        } else {
            Err(RecycleError::message("connection is closed"))
        }
    }
}

/// The URLs of a comma-separated list (`split_url_list`); at least one.
fn split_urls(list: &str) -> Result<Vec<String>> {
    let urls: Vec<String> = stevedore_core::store::split_url_list(list)
        .into_iter()
        .map(String::from)
        .collect();
    if urls.is_empty() {
        return Err(Error::Config("the RabbitMQ URL is empty".to_string()));
    }
    Ok(urls)
}

/// Creates and recycles publishing channels on pooled connections.
struct ChannelManager {
    connections: ConnectionPool,
    confirm: bool,
    watched: Watched,
}

impl managed::Manager for ChannelManager {
    type Type = Channel;
    type Error = Error;

    async fn create(&self) -> Result<Channel> {
        let conn = self.connections.get().await.map_err(pool_error)?;
        if let Ok(mut w) = self.watched.lock() {
            w.retain(|s| s.connected());
            w.push_back(conn.status().clone());
            while w.len() > WATCHED_CONNECTIONS {
                w.pop_front();
            }
        }
        let channel = conn.create_channel().await?;
        if self.confirm {
            channel.confirm_select(ConfirmSelectOptions::default()).await?;
        }
        Ok(channel)
    }

    async fn recycle(&self, channel: &mut Channel, _: &Metrics) -> RecycleResult<Error> {
        if channel.status().connected() {
            Ok(())
        } else {
            Err(RecycleError::message("channel is closed"))
        }
    }
}

fn connection_pool(urls: &[String], names: &BrokerNames, role: &str, size: usize) -> Result<ConnectionPool> {
    let properties = ConnectionProperties::default()
        .with_connection_name(LongString::from(format!("{}-{role}", names.prefix)))
        .with_executor(tokio_executor_trait::Tokio::current());
    // Each pool starts at a random node, so that the processes' connections
    // spread over the cluster instead of all going to the first node.
    let start = (uuid::Uuid::new_v4().as_u128() % urls.len() as u128) as usize;
    managed::Pool::builder(ConnectionManager {
        urls: urls.to_vec(),
        properties,
        next: AtomicUsize::new(start),
    })
    .runtime(deadpool::Runtime::Tokio1)
    .max_size(size)
    .create_timeout(Some(CONNECT_TIMEOUT))
    .wait_timeout(Some(CONNECT_TIMEOUT))
    .build()
    .map_err(|e| Error::Config(format!("RabbitMQ connection pool: {e}")))
}

fn channel_pool(
    connections: &ConnectionPool,
    confirm: bool,
    watched: &Watched,
) -> Result<managed::Pool<ChannelManager>> {
    managed::Pool::builder(ChannelManager {
        connections: connections.clone(),
        confirm,
        watched: watched.clone(),
    })
    .max_size(PUBLISH_CHANNELS)
    .runtime(deadpool::Runtime::Tokio1)
    .create_timeout(Some(CONNECT_TIMEOUT))
    .build()
    .map_err(|e| Error::Config(format!("RabbitMQ channel pool: {e}")))
}

fn pool_error<E: std::fmt::Display>(e: managed::PoolError<E>) -> Error {
    Error::Broker(format!("RabbitMQ unavailable: {e}"))
}

async fn close_quietly(channel: Channel) {
    if channel.status().connected() {
        let _ = channel.close(200, "OK").await;
    }
}

/// `url` with its passwords replaced by `***` (the one rule, in the core).
pub use stevedore_core::store::redact_url;
