import FarmMetrics
import JobWorker
import Metrics
import Prometheus
import ServiceLifecycle

/// The worker's `/metrics`: its process metrics (`WorkerMetrics`) and, through swift-metrics, the ML kinds' batch
/// figures, in one Prometheus registry.
enum WorkerMetricsSetup {
    /// Makes the worker's metrics and bootstraps swift-metrics over the same registry (once per process).
    static func bootstrap() -> WorkerMetrics {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(metricsFactory(registry: registry))
        return WorkerMetrics(registry: registry)
    }

    /// A swift-metrics factory writing into `registry`, with buckets for the inference batch sizes.
    static func metricsFactory(registry: PrometheusCollectorRegistry) -> PrometheusMetricsFactory {
        var factory = PrometheusMetricsFactory(registry: registry)
        let sizes: [Double] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
        factory.valueHistogramBuckets = ["jobfarm_inference_batch_rows": sizes, "jobfarm_inference_batch_requests": sizes]
        factory.durationHistogramBuckets = ["jobfarm_inference_pass_seconds": WorkerMetrics.runBuckets]
        return factory
    }

    /// The HTTP server of `/metrics` for a worker.
    static func server(metrics: WorkerMetrics, worker: Worker, port: Int) -> some Service {
        let concurrency = worker.configuration.concurrency
        return MetricsServer(port: port) { [metrics, worker] in
            metrics.slots(busy: worker.runningCount, total: concurrency)
            return metrics.registry.emitToString()
        }.makeApplication()
    }
}
