import Foundation
import Hummingbird
import NIOCore
import Prometheus
import Synchronization

/// The dispatcher's Prometheus metrics, served as text at `GET /metrics` (operator keys only).
///
/// Requests by route, method and status; latency histograms by route; jobs submitted by kind, tier and tenant;
/// requests refused by a rate limit, by tenant; idempotent replays. Other components add theirs to the same
/// `registry` (`gauge(_:help:)`, e.g. the outbox depth and the circuit state), or through swift-metrics with
/// `factory` (a `MetricsFactory` over the same registry; give those metrics names of their own).
public final class DispatcherMetrics: Sendable {
    /// Every metric `/metrics` shows.
    public let registry: PrometheusCollectorRegistry
    /// swift-metrics' `MetricsFactory` writing into `registry`.
    public var factory: PrometheusMetricsFactory { PrometheusMetricsFactory(registry: registry) }

    static let latencyBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
        .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
        .seconds(30), .seconds(60),
    ]
    static var requests: MetricNameDescriptor { MetricNameDescriptor(namespace: "jobfarm", subsystem: "http", metricName: "requests", unitName: "total",
                                        helpText: "HTTP requests answered, by route template, method and status.") }
    static var latency: MetricNameDescriptor { MetricNameDescriptor(namespace: "jobfarm", subsystem: "http", metricName: "request_duration", unitName: "seconds",
                                       helpText: "Time to answer an HTTP request, by route template and method.") }
    static var submitted: MetricNameDescriptor { MetricNameDescriptor(namespace: "jobfarm", metricName: "jobs_submitted", unitName: "total",
                                         helpText: "Jobs accepted over HTTP, by kind, tier and tenant (replays not counted).") }
    static var limited: MetricNameDescriptor { MetricNameDescriptor(namespace: "jobfarm", metricName: "rate_limited_requests", unitName: "total",
                                       helpText: "Submissions refused with 429 by a rate limit, by tenant.") }
    static var replays: MetricNameDescriptor { MetricNameDescriptor(namespace: "jobfarm", metricName: "idempotent_replays", unitName: "total",
                                       helpText: "Submissions answered from an earlier request with the same Idempotency-Key, by tenant.") }

    /// The handles of the per-request metrics by label values: the registry finds a metric by hashing its name and
    /// label array under its lock, which cost a few per cent of a submission's CPU; a handle found once is reused.
    private struct Handles {
        var counters: [[String]: Counter] = [:]
        var histograms: [[String]: DurationHistogram] = [:]
    }
    private let handles = Mutex(Handles())

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
    }

    /// The counter `descriptor` with these label values (names given by `labels`), made once.
    private func counter(_ descriptor: MetricNameDescriptor, _ labels: [(String, String)]) -> Counter {
        let key = [descriptor.metricName] + labels.map(\.1)
        if let found = handles.withLock({ $0.counters[key] }) { return found }
        let made = registry.makeCounter(descriptor: descriptor, labels: labels)
        handles.withLock { $0.counters[key] = made }
        return made
    }

    /// A gauge in this registry: the hook for state owned elsewhere (outbox depth, circuit state, …).
    public func gauge(_ name: String, help: String, labels: [(String, String)] = []) -> Gauge {
        registry.makeGauge(descriptor: MetricNameDescriptor(metricName: name, unitName: "", helpText: help), labels: labels)
    }

    func request(route: String, method: String, status: Int, duration: Duration) {
        counter(Self.requests, [("route", route), ("method", method), ("status", String(status))]).increment()
        let key = [route, method]
        let histogram = handles.withLock { $0.histograms[key] } ?? {
            let made = registry.makeDurationHistogram(descriptor: Self.latency, labels: [("route", route), ("method", method)],
                                                      buckets: Self.latencyBuckets)
            handles.withLock { $0.histograms[key] = made }
            return made
        }()
        histogram.record(duration)
    }

    func submitted(kind: String, tier: String, tenant: String, count: Int) {
        counter(Self.submitted, [("kind", kind), ("tier", tier), ("tenant", tenant)]).increment(by: Int64(count))
    }

    func rateLimited(tenant: String) {
        counter(Self.limited, [("tenant", tenant)]).increment()
    }

    func replayed(tenant: String) {
        counter(Self.replays, [("tenant", tenant)]).increment()
    }

    /// The outbox's depth and the circuit breaker's state, as gauges.
    func outbox(jobs: Int, bytes: Int, circuit: CircuitState) {
        gauge("jobfarm_outbox_jobs", help: "Jobs waiting in this replica's outbox for Redis.").set(Int64(jobs))
        gauge("jobfarm_outbox_bytes", help: "Bytes of job requests in this replica's outbox.").set(Int64(bytes))
        for state in [CircuitState.closed, .open, .halfOpen] {
            gauge("jobfarm_redis_circuit_state", help: "The circuit breaker around Redis: 1 for the state it is in, else 0.",
                  labels: [("state", state.rawValue)]).set(Int64(state == circuit ? 1 : 0))
        }
    }

    /// The Prometheus text exposition.
    var response: Response {
        Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                 body: ResponseBody(byteBuffer: ByteBuffer(bytes: registry.emitToBuffer())))
    }
}

/// Counts every answer and its latency by route template (`unmatched` for a path no route has, so that scanners
/// cannot grow the label set). Outermost, so it sees the answers `ProblemMiddleware` makes of errors.
struct RequestMetricsMiddleware<Context: RequestContext>: RouterMiddleware {
    let metrics: DispatcherMetrics

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let method = Dispatcher.operations.contains(where: { $0.method == request.method.rawValue }) ? request.method.rawValue : "other"
        do {
            let response = try await next(request, context)
            metrics.request(route: context.endpointPath ?? "unmatched", method: method, status: response.status.code,
                            duration: ContinuousClock.now - start)
            return response
        } catch {
            metrics.request(route: context.endpointPath ?? "unmatched", method: method, status: 500, duration: ContinuousClock.now - start)
            throw error
        }
    }
}
