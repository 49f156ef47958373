import CoreMetrics

/// The inference batcher's figures through swift-metrics: a no-op until the process bootstraps `MetricsSystem`
/// (`jobfarm worker --metrics-port` does, over the worker's Prometheus registry).
enum InferenceMetrics {
    /// Label names of the series (Prometheus names: base units, `_seconds`).
    static let batchRows = "jobfarm_inference_batch_rows"
    static let batchRequests = "jobfarm_inference_batch_requests"
    static let passTime = "jobfarm_inference_pass_seconds"

    /// One forward pass of a dynamic batch: its rows, the requests it answered and its time.
    static func pass(rows: Int, requests: Int, time: Duration) {
        Recorder(label: batchRows).record(rows)
        Recorder(label: batchRequests).record(requests)
        let (seconds, attoseconds) = time.components
        Timer(label: passTime).recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }
}
