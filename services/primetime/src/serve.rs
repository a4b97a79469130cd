//! `primetime serve`: the HTTP API over either the embedded default
//! (simulator source, in-memory price table) or Kafka mode: one pipeline
//! per partition assignment, each planned by [`crate::recovery`]
//! (snapshot restore, rewind, or the committed offsets), publishing to the
//! in-memory table, the prices topic and (optionally) Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{App, HttpServer};
use anyhow::Context as _;
use primetime_core::{PriceDecision, Tick};
use primetime_sim::{SimConfig, Simulator};

use crate::config::ServiceConfig;
use crate::http::{self, AppState, Limits};
use crate::inputs::SimInput;
use crate::kafka::consumer::Resumed;
use crate::kafka::exchange::KafkaExchange;
use crate::kafka::{self, consumer::KafkaSource, producer::DeadLetters, producer::PricePublisher};
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineOptions, Sink, SnapshotOptions};
use crate::recovery::{RedisPriceSink, SnapshotWriter};
use crate::redis_store::RedisStore;
use crate::table::{ActiveView, PriceTable};
use crate::wall_clock::wall_clock_ms;

/// Publishes each tick into the in-memory price table.
pub struct TableSink {
    table: Arc<PriceTable>,
    /// Settled cells (back at 1.0) are dropped after this many ticks.
    keep_settled_ticks: i64,
}

impl TableSink {
    pub fn new(table: Arc<PriceTable>) -> Self {
        Self {
            table,
            keep_settled_ticks: 30,
        }
    }
}

impl Sink for TableSink {
    fn publish(
        &mut self,
        tick: Tick,
        tick_end_ms: i64,
        decisions: &[PriceDecision],
    ) -> anyhow::Result<()> {
        self.table
            .publish(tick, tick_end_ms, wall_clock_ms(), decisions);
        if tick.0 % self.keep_settled_ticks == 0 {
            self.table
                .forget_settled(Tick(tick.0 - self.keep_settled_ticks));
        }
        Ok(())
    }
}

/// Runs until SIGINT/SIGTERM, then drains: stops HTTP (in-flight requests
/// finish), stops the source, waits for the pipeline, exits 0. A pipeline
/// that fails (e.g. a fatal Kafka error) stops the service with its error.
pub fn serve(config: ServiceConfig) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(run(config))
}

/// What both running modes share.
#[derive(Clone)]
struct Parts {
    model: Arc<dyn primetime_core::PriceModel + Send + Sync>,
    table: Arc<PriceTable>,
    active: Arc<ActiveView>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    /// Set in Kafka mode with Redis (HTTP reads other instances' cells).
    remote: Arc<std::sync::OnceLock<crate::serve_lookup::RemotePrices>>,
}

async fn run(config: ServiceConfig) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new(config.shards));
    let choice = crate::model::choose(&config.model, config.core.policy.fallback);
    metrics.set_model_fallback(choice.fallback_reason.is_some());
    let parts = Parts {
        table: Arc::new(PriceTable::new(choice.model.version())),
        model: choice.model,
        active: Arc::new(ActiveView::new(config.shards)),
        metrics,
        stop: Arc::new(AtomicBool::new(false)),
        remote: Arc::default(),
    };
    let kafka = config.kafka.enabled();
    let (runner, mode) = if kafka {
        let runner = actix_rt::spawn(run_kafka(config.clone(), parts.clone()));
        (runner, format!("kafka {}", config.kafka.brokers))
    } else {
        let (pipeline, stadium) = start_embedded(&config, &parts)?;
        let runner = actix_rt::spawn(async move {
            let (source, clock) = pipeline.wait().await?;
            tracing::info!(
                records = source.records,
                ticks = clock.ticks,
                decisions = clock.decisions,
                "pipeline stopped"
            );
            Ok(())
        });
        let mode = format!(
            "embedded simulator, stadium cell {}",
            stadium.map_or("-".into(), |c| c.to_string())
        );
        (runner, mode)
    };

    let state = AppState {
        table: Arc::clone(&parts.table),
        active: Arc::clone(&parts.active),
        metrics: Arc::clone(&parts.metrics),
        geo: config.core.geo(),
        limits: Limits {
            max_body_bytes: config.max_body_bytes,
            max_bbox_cells: config.max_bbox_cells,
            stale_after_ms: config.stale_after_ms,
        },
        now_ms: Arc::new(wall_clock_ms),
        prices: Arc::new(crate::serve_lookup::ServeLookup {
            table: Arc::clone(&parts.table),
            remote: Arc::clone(&parts.remote),
        }),
    };
    let addr = config.socket_addr();
    let server = HttpServer::new(move || {
        let state = state.clone();
        App::new().configure(move |c| http::configure(c, state))
    })
    .workers(config.http_workers)
    // Signals are ours: stop HTTP first, then the pipeline, then the system.
    .disable_signals()
    .bind(addr)
    .with_context(|| format!("cannot listen on {addr}"))?
    .shutdown_timeout(5)
    .run();
    let handle = server.handle();
    let signal_handle = handle.clone();
    actix_rt::spawn(async move {
        shutdown_signal().await;
        tracing::info!("signal received, draining http");
        signal_handle.stop(true).await;
    });
    tracing::info!(
        url = %format!("http://{addr}/"),
        shards = config.shards,
        http_workers = config.http_workers,
        mode = %mode,
        "primetime serving"
    );
    eprintln!("primetime: live prices on http://{addr}/ ({mode})");
    let server = actix_rt::spawn(server);
    let mut runner = runner;
    let failed = tokio::select! {
        r = server => {
            r.context("http server task")?.context("http server")?;
            None
        }
        r = &mut runner => Some(r),
    };
    tracing::info!("shutting down");
    parts.stop.store(true, Ordering::Relaxed);
    let result = match failed {
        Some(r) => {
            handle.stop(true).await;
            r
        }
        None => runner.await,
    };
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.context("pipeline failed")),
        Err(e) => Err(anyhow::anyhow!("pipeline task: {e}")),
    }
}

fn pipeline_options(config: &ServiceConfig, parts: &Parts) -> PipelineOptions {
    PipelineOptions {
        active: Some(Arc::clone(&parts.active)),
        ..PipelineOptions::sized(config.shards, config.mailbox, config.batch_size)
    }
}

fn start_embedded(
    config: &ServiceConfig,
    parts: &Parts,
) -> anyhow::Result<(Pipeline, Option<primetime_core::CellId>)> {
    let sim = Simulator::new(SimConfig {
        start_ms: wall_clock_ms(),
        ..config.sim.clone()
    })
    .map_err(|e| anyhow::anyhow!("simulator: {e}"))?;
    let stadium = sim.stadium_cell();
    let input = SimInput::new(sim, config.sim_speed, Arc::clone(&parts.stop));
    let pipeline = Pipeline::start(
        &config.core,
        &pipeline_options(config, parts),
        Arc::clone(&parts.model),
        input,
        TableSink::new(Arc::clone(&parts.table)),
        Arc::clone(&parts.metrics),
    )?;
    Ok((pipeline, stadium))
}

/// Kafka mode: one pipeline per partition assignment ("epoch"). Between
/// epochs the consumer is halted and each epoch is planned (see
/// [`crate::recovery`]): restored from a snapshot in Redis, rewound, or
/// read from the committed offsets.
async fn run_kafka(config: ServiceConfig, parts: Parts) -> anyhow::Result<()> {
    let k = config.kafka.clone();
    let metrics = Arc::clone(&parts.metrics);
    let stop = Arc::clone(&parts.stop);
    let store = match config.redis.enabled() {
        true => {
            let store = RedisStore::start(&config.redis).context("redis")?;
            let extra = store.clone();
            let _ = parts
                .metrics
                .extra
                .set(crate::metrics::ExtraMetrics(Box::new(move |out| {
                    crate::recovery::render_redis_metrics(&extra, out)
                })));
            Some(store)
        }
        false => None,
    };
    // Broker round trips at start-up run off the reactor.
    let (publisher, source, exchange) = tokio::task::spawn_blocking(move || {
        if k.create_topics {
            kafka::create_topics(&k)?;
        }
        let publisher = PricePublisher::start(&k, Arc::clone(&metrics))?;
        let dead_letters = DeadLetters::new(&k, Arc::clone(&metrics))?;
        let source = KafkaSource::start(&k, stop, publisher.durable_tick(), dead_letters, metrics)?;
        let exchange =
            KafkaExchange::start(&k, source.partition_map().per_topic, source.assignment())?;
        Ok::<_, kafka::KafkaError>((publisher, source, Arc::new(exchange)))
    })
    .await
    .map_err(|e| anyhow::anyhow!("kafka start-up task: {e}"))??;
    let sink = publisher
        .sink()
        .ok_or_else(|| anyhow::anyhow!("kafka publisher already stopped"))?;
    let per_topic = source.partition_map().per_topic;
    let fingerprint = crate::recovery::fingerprint(&config.core, parts.model.version(), per_topic);
    let snapshots = match &store {
        Some(s) if config.redis.snapshot_every_ticks > 0 => Some(SnapshotOptions {
            every_ticks: config.redis.snapshot_every_ticks,
            sink: Arc::new(SnapshotWriter::start(
                s.clone(),
                config.kafka.group_id.clone(),
                config.core.geo(),
                per_topic,
                fingerprint,
                Arc::clone(&parts.metrics),
            )?),
        }),
        _ => None,
    };
    let complete = Arc::new(AtomicBool::new(false));
    if let Some(store) = &store {
        let (assignment, geo) = (source.assignment(), config.core.geo());
        let _ = parts.remote.set(crate::serve_lookup::RemotePrices {
            store: store.clone(),
            owned: Arc::new(move |cell| {
                let key = geo.region_of(cell).to_string();
                assignment.is_owned(kafka::partition_for_key(key.as_bytes(), per_topic))
            }),
            complete: Arc::clone(&complete),
        });
    }
    let source = Arc::new(source);
    let mut epoch = 0u32;
    let result = loop {
        epoch += 1;
        exchange.set_epoch(epoch);
        let (plan, start) = {
            let (source, store, core, group, kafka_config) = (
                Arc::clone(&source),
                store.clone(),
                config.core.clone(),
                config.kafka.group_id.clone(),
                config.kafka.clone(),
            );
            let planned = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
                let mut info = source.halt()?;
                loop {
                    let plan = crate::recovery::plan_epoch(
                        &info,
                        per_topic,
                        store.as_ref(),
                        &group,
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
            .map_err(|e| anyhow::anyhow!("epoch planning task: {e}"))?;
            match planned {
                Ok(p) => p,
                Err(_) if parts.stop.load(Ordering::Relaxed) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        let counter = match plan.how {
            "snapshot" => &parts.metrics.starts_from_snapshot,
            "rewind" => &parts.metrics.starts_rewound,
            _ => &parts.metrics.starts_fresh,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        complete.store(plan.complete, Ordering::Relaxed);
        tracing::info!(
            epoch,
            from = %plan.how,
            restored_tick = plan.restore.as_ref().map(|i| i.tick),
            publish_from = plan.publish_from.map(|t| t.0),
            partitions = start.len(),
            "pipeline epoch starts"
        );
        let options = PipelineOptions {
            exchange: Some(Arc::clone(&exchange) as Arc<dyn crate::pipeline::BoundaryExchange>),
            snapshots: snapshots.clone(),
            restore: plan.restore.clone(),
            publish_from: plan.publish_from,
            ..pipeline_options(&config, &parts)
        };
        let pipeline = Pipeline::start(
            &config.core,
            &options,
            Arc::clone(&parts.model),
            source.input(start),
            (
                TableSink::new(Arc::clone(&parts.table)),
                (sink.clone(), store.clone().map(RedisPriceSink::new)),
            ),
            Arc::clone(&parts.metrics),
        )?;
        match pipeline.wait().await {
            Ok((s, c)) => {
                tracing::info!(
                    epoch,
                    records = s.records,
                    ticks = c.ticks,
                    decisions = c.decisions,
                    "pipeline epoch ended"
                );
            }
            Err(e) => break Err(e),
        }
        if parts.stop.load(Ordering::Relaxed) || !source.rebalanced() {
            break Ok(());
        }
    };
    drop(sink);
    tokio::task::spawn_blocking(move || {
        exchange.shutdown();
        drop(source);
        publisher.shutdown();
        if let Some(store) = store {
            store.shutdown();
        }
    })
    .await
    .map_err(|e| anyhow::anyhow!("kafka shutdown task: {e}"))?;
    result
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use actix_rt::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = actix_rt::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = actix_rt::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = actix_rt::signal::ctrl_c().await;
    }
}
