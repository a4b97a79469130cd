//! `primetime serve`: the embedded default (simulator source, in-memory
//! price table) behind the HTTP API.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use actix_web::{App, HttpServer};
use anyhow::Context as _;
use primetime_core::{PriceDecision, Tick};
use primetime_sim::{SimConfig, Simulator};

use crate::config::ServiceConfig;
use crate::http::{self, AppState, Limits, wall_clock_ms};
use crate::inputs::SimInput;
use crate::metrics::Metrics;
use crate::pipeline::{Pipeline, PipelineOptions, Sink};
use crate::table::{ActiveView, PriceTable};

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
/// finish), stops the source, waits for the pipeline, exits 0.
pub fn serve(config: ServiceConfig) -> anyhow::Result<()> {
    actix_web::rt::System::new().block_on(run(config))
}

async fn run(config: ServiceConfig) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new(config.shards));
    let choice = crate::model::choose(&config.model, config.core.policy.fallback);
    metrics.set_model_fallback(choice.fallback_reason.is_some());
    let model = choice.model;
    let table = Arc::new(PriceTable::new(model.version()));
    let sim = Simulator::new(SimConfig {
        start_ms: wall_clock_ms(),
        ..config.sim.clone()
    })
    .map_err(|e| anyhow::anyhow!("simulator: {e}"))?;
    let stadium = sim.stadium_cell();
    let stop = Arc::new(AtomicBool::new(false));
    let input = SimInput::new(sim, config.sim_speed, Arc::clone(&stop));
    let active = Arc::new(ActiveView::new(config.shards));
    let options = PipelineOptions {
        shards: config.shards,
        mailbox: config.mailbox,
        batch_size: config.batch_size,
        active: Some(Arc::clone(&active)),
    };
    let pipeline = Pipeline::start(
        &config.core,
        &options,
        model,
        input,
        TableSink::new(Arc::clone(&table)),
        Arc::clone(&metrics),
    )?;

    let state = AppState {
        table,
        active,
        metrics,
        geo: config.core.geo(),
        limits: Limits {
            max_body_bytes: config.max_body_bytes,
            max_bbox_cells: config.max_bbox_cells,
            stale_after_ms: config.stale_after_ms,
        },
        now_ms: Arc::new(wall_clock_ms),
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
    actix_rt::spawn(async move {
        shutdown_signal().await;
        tracing::info!("signal received, draining http");
        handle.stop(true).await;
    });
    tracing::info!(
        url = %format!("http://{addr}/"),
        shards = config.shards,
        http_workers = config.http_workers,
        stadium_cell = ?stadium.map(|c| c.to_string()),
        "primetime serving (embedded simulator, in-memory prices)"
    );
    eprintln!(
        "primetime: live prices on http://{addr}/ (stadium cell {})",
        stadium.map_or("-".into(), |c| c.to_string())
    );
    server.await.context("http server")?;
    tracing::info!("shutting down");
    stop.store(true, Ordering::Relaxed);
    let (source, clock) = pipeline.wait().await?;
    tracing::info!(
        records = source.records,
        ticks = clock.ticks,
        decisions = clock.decisions,
        "stopped"
    );
    Ok(())
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
