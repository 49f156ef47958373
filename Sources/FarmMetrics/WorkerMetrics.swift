import JobWorker
import Prometheus

/// A worker process's metrics (`jobfarm worker --metrics-port`): jobs started by kind, attempts finished by kind and
/// outcome, queue wait (server times) and run time histograms by kind, busy slots. A `WorkerObserver`: give it to
/// `WorkerConfiguration.observer`.
public final class WorkerMetrics: WorkerObserver {
    /// Where the series go; `/metrics` prints it (other components may register theirs too).
    public let registry: PrometheusCollectorRegistry

    /// Queue wait: from a millisecond to an hour.
    public static let waitBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30), .seconds(60), .seconds(300),
        .seconds(900), .seconds(3600),
    ]
    /// Run time: from 100 µs (a no-op) to an hour (training).
    public static let runBuckets: [Duration] = [
        .microseconds(100), .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10), .seconds(30),
        .seconds(60), .seconds(300), .seconds(3600),
    ]

    static var started: MetricNameDescriptor { MetricNameDescriptor(
        namespace: "jobfarm", subsystem: "worker", metricName: "jobs_started", unitName: "total",
        helpText: "Jobs whose handler this worker started, by queue, tier and kind.") }
    static var finished: MetricNameDescriptor { MetricNameDescriptor(
        namespace: "jobfarm", subsystem: "worker", metricName: "jobs_finished", unitName: "total",
        helpText: "Attempts this worker recorded, by queue, tier, kind and outcome (succeeded, retry, dead, cancelled).") }
    static var wait: MetricNameDescriptor { MetricNameDescriptor(
        namespace: "jobfarm", subsystem: "worker", metricName: "queue_wait", unitName: "seconds",
        helpText: "Time jobs waited in line before this worker leased them (Redis server times), by queue, tier and kind.") }
    static var run: MetricNameDescriptor { MetricNameDescriptor(
        namespace: "jobfarm", subsystem: "worker", metricName: "job_run", unitName: "seconds",
        helpText: "Handler run time of the attempts this worker finished, by queue, tier and kind.") }

    /// Every metric name a worker's `/metrics` shows: its own, then the inference batcher's (written through
    /// swift-metrics by `MLJobs`). Histograms by their base name.
    public static let metricNames = [
        "jobfarm_worker_jobs_started_total", "jobfarm_worker_jobs_finished_total", "jobfarm_worker_queue_wait_seconds",
        "jobfarm_worker_job_run_seconds", "jobfarm_worker_busy_slots", "jobfarm_worker_slots",
        "jobfarm_inference_batch_rows", "jobfarm_inference_batch_requests", "jobfarm_inference_pass_seconds",
    ]

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
    }

    public func jobStarted(kind: String, queue: String, tier: String, queueWait: Duration?) {
        let labels = [("queue", queue), ("tier", tier), ("kind", kind)]
        registry.makeCounter(descriptor: Self.started, labels: labels).increment()
        if let queueWait {
            registry.makeDurationHistogram(descriptor: Self.wait, labels: labels, buckets: Self.waitBuckets).record(queueWait)
        }
    }

    public func jobFinished(kind: String, queue: String, tier: String, outcome: String, runTime: Duration?) {
        registry.makeCounter(descriptor: Self.finished, labels: [("queue", queue), ("tier", tier), ("kind", kind), ("outcome", outcome)])
            .increment()
        if let runTime {
            registry.makeDurationHistogram(descriptor: Self.run, labels: [("queue", queue), ("tier", tier), ("kind", kind)], buckets: Self.runBuckets)
                .record(runTime)
        }
    }

    /// Sets the slot gauges (call before each scrape): jobs running now and the worker's concurrency.
    public func slots(busy: Int, total: Int) {
        registry.makeGauge(descriptor: MetricNameDescriptor(
            namespace: "jobfarm", subsystem: "worker", metricName: "busy_slots", unitName: "",
            helpText: "Jobs running in this worker now.")).set(Int64(busy))
        registry.makeGauge(descriptor: MetricNameDescriptor(
            namespace: "jobfarm", subsystem: "worker", metricName: "slots", unitName: "",
            helpText: "Jobs this worker runs at once at most (its concurrency).")).set(Int64(total))
    }
}
