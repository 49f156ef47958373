import Hummingbird
import Logging
import NIOCore

/// A small HTTP server with one route, `GET /metrics` (Prometheus text), for the exporter and each worker.
/// Run it as a `Service` in the process's `ServiceGroup` (`makeApplication`).
public struct MetricsServer: Sendable {
    public var host: String
    public var port: Int
    /// Writes the exposition text at each scrape.
    public var render: @Sendable () async -> String

    public init(host: String = "0.0.0.0", port: Int, render: @escaping @Sendable () async -> String) {
        self.host = host
        self.port = port
        self.render = render
    }

    /// The Hummingbird application (a `Service`): `GET /metrics`, and `GET /healthz` answering `ok`.
    public func makeApplication(logger: Logger = Logger(label: "jobfarm.metrics")) -> some ApplicationProtocol {
        let router = Router(context: BasicRequestContext.self)
        let render = self.render
        router.get("/metrics") { _, _ in
            let text = await render()
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                            body: ResponseBody(byteBuffer: ByteBuffer(string: text)))
        }
        router.get("/healthz") { _, _ in "ok" }
        return Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "jobfarm-metrics"), logger: logger)
    }
}
