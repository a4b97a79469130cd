//! `primetime serve`: the wiring. Builds the model, the price table and
//! metrics, starts one running mode and the HTTP API over them, and drains
//! on a signal.
//!
//! - `embedded`: the default — the built-in simulator as input, prices in
//!   memory;
//! - `kafka`: one pipeline per partition assignment ("epoch"), each planned
//!   by [`crate::recovery`] (snapshot restore, rewind, or the committed
//!   offsets), publishing to the in-memory table, the prices topic and
//!   (optionally) Redis;
//! - [`lookup`]: HTTP's price lookup over the table and, in Kafka mode with
//!   Redis, the shared price table.

mod embedded;
mod kafka;
pub mod lookup;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::{App, HttpServer};
use anyhow::Context as _;

use crate::config::ServiceConfig;
use crate::controls::{ControlLog, Controls};
use crate::http::{self, AppState, Limits};
use crate::kafka::controls::KafkaControls;
use crate::kafka::quote_audit::KafkaQuoteAudit;
use crate::metrics::Metrics;
use crate::pipeline::PipelineOptions;
use crate::quotes::QuoteAudit;
use crate::table::{ActiveView, PriceTable};
use crate::wall_clock::wall_clock_ms;

/// Runs until SIGINT/SIGTERM, then drains: stops HTTP (in-flight requests
/// finish), stops the source, waits for the pipeline, exits 0. A pipeline
/// that fails (e.g. a fatal Kafka error) stops the service with its error.
pub fn serve(config: ServiceConfig) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(run(config))
}

/// What both running modes share.
#[derive(Clone)]
pub(super) struct Parts {
    model: Arc<dyn primetime_core::PriceModel + Send + Sync>,
    table: Arc<PriceTable>,
    active: Arc<ActiveView>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    /// Set in Kafka mode with Redis (HTTP reads other instances' cells).
    remote: Arc<std::sync::OnceLock<lookup::RemotePrices>>,
    /// The operator-control log (DESIGN §6a): in memory in the embedded
    /// default, the controls topic in Kafka mode.
    controls: Option<Arc<dyn Controls>>,
}

/// The running mode's task: the embedded pipeline or Kafka's epochs.
type Runner = actix_rt::task::JoinHandle<anyhow::Result<()>>;

async fn run(config: ServiceConfig) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new(config.shards));
    let choice = crate::model::choose(&config.model, config.core.policy.fallback);
    metrics.set_model_fallback(choice.fallback_reason.is_some());
    let kafka_controls = start_kafka_controls(&config).await?;
    let controls: Arc<dyn Controls> = match &kafka_controls {
        Some(k) => Arc::clone(k) as Arc<dyn Controls>,
        None => Arc::new(ControlLog::new(config.core.bucket_ms)),
    };
    let parts = Parts {
        table: Arc::new(PriceTable::with_history(
            choice.model.version(),
            crate::history::History::new(config.core.bucket_ms, &config.history),
        )),
        model: choice.model,
        active: Arc::new(ActiveView::new(config.shards)),
        metrics,
        stop: Arc::new(AtomicBool::new(false)),
        remote: Arc::default(),
        controls: Some(controls),
    };
    // A resumed Kafka pipeline may hold decisions the history never saw:
    // no 1.0 guessed for them until the history is restored.
    parts
        .table
        .history()
        .set_unseen_are_unpriced(!config.kafka.enabled());
    let (mut runner, mode) = start_mode(&config, &parts)?;
    let audit = quote_audit(&config)?;
    let server = start_http(&config, &parts, Arc::clone(&audit) as Arc<dyn QuoteAudit>)?;
    let handle = server.handle();
    let signal_handle = handle.clone();
    actix_rt::spawn(async move {
        shutdown_signal().await;
        tracing::info!("signal received, draining http");
        signal_handle.stop(true).await;
    });
    let addr = config.socket_addr();
    tracing::info!(
        url = %format!("http://{addr}/"),
        shards = config.shards,
        http_workers = config.http_workers,
        mode = %mode,
        "primetime serving"
    );
    eprintln!("primetime: live prices on http://{addr}/ ({mode})");
    let server = actix_rt::spawn(server);
    let failed = tokio::select! {
        r = server => {
            r.context("http server task")?.context("http server")?;
            None
        }
        r = &mut runner => Some(r),
    };
    tracing::info!("shutting down");
    parts.stop.store(true, Ordering::Relaxed);
    if let Some(kafka) = audit.kafka.as_ref() {
        let kafka = Arc::clone(kafka);
        // The audit trail's queued records, off the reactor.
        let _ = tokio::task::spawn_blocking(move || kafka.flush(Duration::from_secs(10))).await;
    }
    let result = match failed {
        Some(r) => {
            handle.stop(true).await;
            r
        }
        None => runner.await,
    };
    if let Some(k) = kafka_controls {
        // Joins the reader thread: off the reactor.
        let _ = tokio::task::spawn_blocking(move || k.shutdown()).await;
    }
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.context("pipeline failed")),
        Err(e) => Err(anyhow::anyhow!("pipeline task: {e}")),
    }
}

/// Kafka mode's control log: the controls topic (created first when
/// asked, with the other topics), read from its start by a thread of its
/// own. Broker round trips, so off the reactor.
async fn start_kafka_controls(
    config: &ServiceConfig,
) -> anyhow::Result<Option<Arc<KafkaControls>>> {
    if !config.kafka.enabled() {
        return Ok(None);
    }
    let (k, bucket_ms) = (config.kafka.clone(), config.core.bucket_ms);
    let controls = tokio::task::spawn_blocking(move || {
        if k.create_topics {
            crate::kafka::create_topics(&k)?;
        }
        KafkaControls::start(&k, bucket_ms)
    })
    .await
    .map_err(|e| anyhow::anyhow!("control log start-up task: {e}"))?
    .context("control log")?;
    Ok(Some(Arc::new(controls)))
}

/// Starts Kafka mode's epochs or the embedded pipeline; returns its task
/// and a description for the start-up line.
fn start_mode(config: &ServiceConfig, parts: &Parts) -> anyhow::Result<(Runner, String)> {
    if config.kafka.enabled() {
        let runner = actix_rt::spawn(kafka::run(config.clone(), parts.clone()));
        return Ok((runner, format!("kafka {}", config.kafka.brokers)));
    }
    let (pipeline, stadium) = embedded::start(config, parts)?;
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
    Ok((runner, mode))
}

/// The HTTP server over the shared parts (not yet running). Signals are
/// ours: stop HTTP first, then the pipeline, then the system.
/// The quotes' audit trail: the quotes topic in Kafka mode, else none.
struct Audit {
    kafka: Option<Arc<KafkaQuoteAudit>>,
}

impl QuoteAudit for Audit {
    fn record(&self, event: crate::quotes::AuditEvent) {
        if let Some(k) = &self.kafka {
            k.record(event);
        }
    }

    fn dropped(&self) -> u64 {
        self.kafka.as_ref().map_or(0, |k| k.dropped())
    }
}

fn quote_audit(config: &ServiceConfig) -> anyhow::Result<Arc<Audit>> {
    let kafka = match config.kafka.enabled() {
        true => Some(Arc::new(
            KafkaQuoteAudit::start(&config.kafka).context("quote audit producer")?,
        )),
        false => None,
    };
    Ok(Arc::new(Audit { kafka }))
}

fn start_http(
    config: &ServiceConfig,
    parts: &Parts,
    audit: Arc<dyn QuoteAudit>,
) -> anyhow::Result<actix_web::dev::Server> {
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
        prices: Arc::new(lookup::ServeLookup {
            table: Arc::clone(&parts.table),
            remote: Arc::clone(&parts.remote),
        }),
        quotes: Arc::new(crate::quotes::QuoteDesk::new(&config.quotes, audit)),
        auth: Arc::new(crate::auth::Auth::new(&config.auth)),
    };
    let addr = config.socket_addr();
    let controls = parts.controls.clone();
    Ok(HttpServer::new(move || {
        let state = state.clone();
        let controls = controls.clone();
        App::new().configure(move |c| {
            http::configure(c, state);
            if let Some(log) = controls {
                http::configure_controls(c, log);
            }
        })
    })
    .workers(config.http_workers)
    .disable_signals()
    .bind(addr)
    .with_context(|| format!("cannot listen on {addr}"))?
    .shutdown_timeout(5)
    .run())
}

pub(super) fn pipeline_options(config: &ServiceConfig, parts: &Parts) -> PipelineOptions {
    PipelineOptions {
        active: Some(Arc::clone(&parts.active) as Arc<dyn crate::pipeline::ActiveCells>),
        ingest_workers: config.ingest_workers,
        controls: parts.controls.clone(),
        ..PipelineOptions::sized(config.shards, config.mailbox, config.batch_size)
    }
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
