import Foundation
import Hummingbird
import Logging
import NIOCore
import WorkerPools

/// Serves the autoscaler's gauges as Prometheus text at `GET /metrics` (`jobfarm supervise --metrics-port`,
/// `jobfarm autoscale --metrics-port`).
enum AutoscaleMetricsServer {
    /// Starts serving; the task runs until cancelled. The address is printed once listening (`metrics on URL`), so a
    /// caller that passed port 0 learns the port.
    static func start(_ gauges: AutoscaleGauges, host: String, port: Int, logger: Logger) -> Task<Void, Never> {
        let router = Router(context: BasicRequestContext.self)
        router.get("/metrics") { _, _ in
            Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                     body: ResponseBody(byteBuffer: ByteBuffer(string: gauges.exposition())))
        }
        let application = Application(
            router: router,
            configuration: ApplicationConfiguration(address: .hostname(host, port: port), serverName: "jobfarm-autoscale"),
            onServerRunning: { channel in
                print("metrics on http://\(host):\(channel.localAddress?.port ?? port)/metrics")
                fflush(nil)
            }, logger: logger)
        return Task {
            do {
                try await application.run()
            } catch {
                logger.error("the metrics server stopped", metadata: ["error": "\(error)"])
            }
        }
    }
}
