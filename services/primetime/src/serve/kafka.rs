//! Kafka mode: one pipeline per partition assignment ("epoch"). Between
//! epochs the consumer is halted and each epoch is planned (see
//! [`crate::recovery`]): restored from a snapshot in Redis, rewound, or
//! read from the committed offsets. Each epoch's decisions go to the
//! in-memory table, the prices topic and (optionally) Redis, in that order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;

use super::{Parts, pipeline_options};
use crate::config::ServiceConfig;
use crate::kafka::consumer::{KafkaSource, Resumed, StartOffset};
use crate::kafka::exchange::KafkaExchange;
use crate::kafka::{self, producer::DeadLetters};
use crate::pipeline::{BoundaryExchange, Pipeline, PipelineOptions, SnapshotOptions};
use crate::recovery::{EpochPlan, SnapshotWriter, WriterOptions};
use crate::redis::RedisStore;
use crate::sinks::kafka::{KafkaSink, PricePublisher};
use crate::sinks::redis::RedisPriceSink;
use crate::sinks::table::TableSink;

/// The Kafka clients and Redis store that outlive every epoch.
struct Clients {
    publisher: PricePublisher,
    source: Arc<KafkaSource>,
    exchange: Arc<KafkaExchange>,
    store: Option<RedisStore>,
    /// Partitions per input topic.
    per_topic: u32,
}

/// Runs epochs until the service stops or a pipeline fails.
pub(super) async fn run(config: ServiceConfig, parts: Parts) -> anyhow::Result<()> {
    let store = start_redis(&config, &parts)?;
    let clients = start_clients(&config, &parts, store).await?;
    restore_history(&config, &parts, &clients);
    let sink = clients
        .publisher
        .sink()
        .ok_or_else(|| anyhow::anyhow!("kafka publisher already stopped"))?;
    let fingerprint =
        crate::recovery::fingerprint(&config.core, parts.model.version(), clients.per_topic);
    let snapshots = snapshot_options(&config, &parts, &clients, fingerprint)?;
    let complete = Arc::new(AtomicBool::new(false));
    share_remote_prices(&config, &parts, &clients, &complete);
    let mut epoch = 0u32;
    let result = loop {
        epoch += 1;
        clients.exchange.set_epoch(epoch);
        let (plan, start) = match plan_epoch(&config, &clients, fingerprint).await {
            Ok(p) => p,
            Err(_) if parts.stop.load(Ordering::Relaxed) => break Ok(()),
            Err(e) => break Err(e),
        };
        plan.start
            .starts_counter(&parts.metrics)
            .fetch_add(1, Ordering::Relaxed);
        complete.store(plan.complete(), Ordering::Relaxed);
        tracing::info!(
            epoch,
            from = %plan.start,
            restored_tick = plan.restore().map(|i| i.tick.0),
            publish_from = plan.publish_from().map(|t| t.0),
            partitions = start.len(),
            "pipeline epoch starts"
        );
        let options = PipelineOptions {
            exchange: Some(Arc::clone(&clients.exchange) as Arc<dyn BoundaryExchange>),
            snapshots: snapshots.clone(),
            restore: plan.restore(),
            publish_from: plan.publish_from(),
            ..pipeline_options(&config, &parts)
        };
        if let Err(e) = run_epoch(&config, &parts, &clients, &sink, options, start, epoch).await {
            break Err(e);
        }
        if parts.stop.load(Ordering::Relaxed) || !clients.source.rebalanced() {
            break Ok(());
        }
    };
    drop(sink);
    shutdown(clients).await?;
    result
}

/// Restores the price history from the prices topic, then tails it, on a
/// thread of its own, while the epochs start: until a cell's decisions
/// are proved read, times after what is known of it answer 422 and times
/// the history has not seen answer 410 (see `history::Reach`), never a
/// guess.
fn restore_history(config: &ServiceConfig, parts: &Parts, clients: &Clients) {
    let frontier = Arc::new(kafka::price_history::Frontier::new(clients.per_topic));
    let (assignment, geo, per_topic) = (
        clients.source.assignment(),
        config.core.geo(),
        clients.per_topic,
    );
    let reach_frontier = Arc::clone(&frontier);
    parts.table.history().set_reach(Box::new(move |cell| {
        let key = geo.region_of(cell).to_string();
        let p = kafka::partition_for_key(key.as_bytes(), per_topic);
        crate::history::Reach {
            through: reach_frontier.through(p),
            owned: assignment.is_owned(p),
        }
    }));
    let (k, table, stop) = (
        config.kafka.clone(),
        Arc::clone(&parts.table),
        Arc::clone(&parts.stop),
    );
    let started = std::time::Instant::now();
    // Its own thread, not awaited: pricing must not wait for a long topic
    // to be read, and the tail then runs until the service stops.
    let spawned = std::thread::Builder::new()
        .name("primetime-price-history".into())
        .spawn(move || {
            let result = kafka::price_history::restore_and_tail(
                &k,
                table.history(),
                &frontier,
                &stop,
                |stats| {
                    tracing::info!(
                        applied = stats.applied,
                        skipped = stats.skipped,
                        seconds = started.elapsed().as_secs_f64(),
                        "price history restored from the prices topic"
                    );
                },
            );
            if let Err(e) = result {
                tracing::error!(error = %e, "price history not restored nor tailed");
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "price history thread not started");
    }
}

/// The Redis store, when configured; its metrics join `/metrics`.
fn start_redis(config: &ServiceConfig, parts: &Parts) -> anyhow::Result<Option<RedisStore>> {
    if !config.redis.enabled() {
        return Ok(None);
    }
    let store = RedisStore::start(&config.redis).context("redis")?;
    let extra = store.clone();
    let _ = parts
        .metrics
        .extra
        .set(crate::metrics::ExtraMetrics(Box::new(move |out| {
            crate::redis::render_redis_metrics(&extra, out)
        })));
    Ok(Some(store))
}

/// Topics (when asked), the price publisher, dead letters, the group
/// consumer and the cell-stats exchange: broker round trips, so off the
/// reactor.
async fn start_clients(
    config: &ServiceConfig,
    parts: &Parts,
    store: Option<RedisStore>,
) -> anyhow::Result<Clients> {
    let (k, metrics, stop) = (
        config.kafka.clone(),
        Arc::clone(&parts.metrics),
        Arc::clone(&parts.stop),
    );
    let (publisher, source, exchange) = tokio::task::spawn_blocking(move || {
        if k.create_topics {
            kafka::create_topics(&k)?;
        }
        let publisher = PricePublisher::start(&k, Arc::clone(&metrics))?;
        let dead_letters = DeadLetters::new(&k, Arc::clone(&metrics))?;
        let source = KafkaSource::start(&k, stop, publisher.durable_tick(), dead_letters, metrics)?;
        let exchange =
            KafkaExchange::start(&k, source.partition_map().per_topic, source.assignment())?;
        Ok::<_, kafka::KafkaError>((publisher, source, exchange))
    })
    .await
    .map_err(|e| anyhow::anyhow!("kafka start-up task: {e}"))??;
    Ok(Clients {
        per_topic: source.partition_map().per_topic,
        publisher,
        source: Arc::new(source),
        exchange: Arc::new(exchange),
        store,
    })
}

/// Snapshots into Redis every `redis.snapshot_every_ticks` ticks (none
/// without Redis or with 0).
fn snapshot_options(
    config: &ServiceConfig,
    parts: &Parts,
    clients: &Clients,
    fingerprint: u64,
) -> anyhow::Result<Option<SnapshotOptions>> {
    let Some(store) = &clients.store else {
        return Ok(None);
    };
    if config.redis.snapshot_every_ticks <= 0 {
        return Ok(None);
    }
    Ok(Some(SnapshotOptions {
        every_ticks: config.redis.snapshot_every_ticks,
        sink: Arc::new(SnapshotWriter::start(WriterOptions {
            store: store.clone(),
            group: config.kafka.group_id.clone(),
            geo: config.core.geo(),
            per_topic: clients.per_topic,
            fingerprint,
            metrics: Arc::clone(&parts.metrics),
            durable: clients.publisher.durable_tick(),
        })?),
    }))
}

/// With Redis, HTTP answers for cells other instances own from the shared
/// price table.
fn share_remote_prices(
    config: &ServiceConfig,
    parts: &Parts,
    clients: &Clients,
    complete: &Arc<AtomicBool>,
) {
    let Some(store) = &clients.store else { return };
    let (assignment, geo, per_topic) = (
        clients.source.assignment(),
        config.core.geo(),
        clients.per_topic,
    );
    let _ = parts.remote.set(super::lookup::RemotePrices {
        store: store.clone(),
        owned: Arc::new(move |cell| {
            let key = geo.region_of(cell).to_string();
            assignment.is_owned(kafka::partition_for_key(key.as_bytes(), per_topic))
        }),
        complete: Arc::clone(complete),
    });
}

/// Halts the consumer, plans the next epoch and resumes it at the plan's
/// positions (planning again when the assignment changed while halted).
async fn plan_epoch(
    config: &ServiceConfig,
    clients: &Clients,
    fingerprint: u64,
) -> anyhow::Result<(EpochPlan, Vec<StartOffset>)> {
    let (source, store, core, kafka_config, per_topic) = (
        Arc::clone(&clients.source),
        clients.store.clone(),
        config.core.clone(),
        config.kafka.clone(),
        clients.per_topic,
    );
    tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut info = source.halt()?;
        loop {
            let plan = crate::recovery::plan_epoch(
                &info,
                per_topic,
                store.as_ref(),
                &kafka_config.group_id,
                &core,
                fingerprint,
                &|| kafka::last_published_tick(&kafka_config),
            );
            match source.resume(plan.positions.clone())? {
                Resumed::Started(offsets) => return Ok((plan, offsets)),
                Resumed::Replan(again) => info = again,
            }
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("epoch planning task: {e}"))?
}

/// One epoch's pipeline, from its start positions until the assignment
/// changes or the service stops.
async fn run_epoch(
    config: &ServiceConfig,
    parts: &Parts,
    clients: &Clients,
    sink: &KafkaSink,
    options: PipelineOptions,
    start: Vec<StartOffset>,
    epoch: u32,
) -> anyhow::Result<()> {
    let sinks = (
        TableSink::new(Arc::clone(&parts.table)),
        (sink.clone(), clients.store.clone().map(RedisPriceSink::new)),
    );
    let mut input = clients.source.input(start);
    // A snapshot taken before any record was read has nothing to resume.
    let newest = options
        .restore
        .iter()
        .flat_map(|image| image.partitions.iter().filter_map(|p| p.max_ingest_ms))
        .max();
    if let Some(newest) = newest {
        input = input.resumed_at(newest);
    }
    let pipeline = Pipeline::start(
        &config.core,
        &options,
        Arc::clone(&parts.model),
        input,
        sinks,
        Arc::clone(&parts.metrics),
    )?;
    let (s, c) = pipeline.wait().await?;
    tracing::info!(
        epoch,
        records = s.records,
        ticks = c.ticks,
        decisions = c.decisions,
        "pipeline epoch ended"
    );
    Ok(())
}

/// Stops the exchange, the consumer, the publisher (flushing) and Redis,
/// off the reactor. An error names the ticks whose prices the broker never
/// acknowledged (the service then exits 1; see `sinks::kafka`).
async fn shutdown(clients: Clients) -> anyhow::Result<()> {
    let published = tokio::task::spawn_blocking(move || {
        clients.exchange.shutdown();
        drop(clients.source);
        let published = clients.publisher.shutdown();
        if let Some(store) = clients.store {
            store.shutdown();
        }
        published
    })
    .await
    .map_err(|e| anyhow::anyhow!("kafka shutdown task: {e}"))?;
    Ok(published?)
}
