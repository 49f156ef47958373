import Foundation
import JobProtocol
import JobWorker
import Logging
import ServiceLifecycle

/// The handler of the reserved kind `jf.schedule`: runs one firing of a schedule (`ScheduleBook.fire`). Every
/// `jobfarm worker` registers it, so a schedule fires wherever its queue is served.
public struct ScheduleFiringJob: JobHandler {
    public static let kind = ScheduleBook.firingKind

    /// The firing job's payload: the schedule, its version and the firing time (unix seconds).
    public struct Parameters: Decodable, Sendable {
        public var schedule: String
        public var version: String
        public var at: Int64
    }

    public let book: ScheduleBook

    public init(book: ScheduleBook) { self.book = book }

    /// Retried (every step is idempotent) for about a minute and a half while Redis or the pipeline engine fails.
    public var retryPolicy: RetryPolicy { .exponentialJitter(base: .milliseconds(500), cap: .seconds(30), maxAttempts: 10) }

    public func run(_ parameters: Parameters, context: JobContext) async throws -> JSONValue {
        let outcome = try await book.fire(schedule: parameters.schedule, version: parameters.version,
                                          at: Date(timeIntervalSince1970: TimeInterval(parameters.at)))
        return outcome.json
    }
}

/// Keeps every schedule's chain of firing jobs in place: `ScheduleBook.enqueueNextFirings` every `interval` (a
/// minute), from each worker. A `Service`: it ends on graceful shutdown.
public struct ScheduleChainService: Service {
    public let book: ScheduleBook
    public let interval: Duration

    public init(book: ScheduleBook, interval: Duration = .seconds(60)) {
        self.book = book
        self.interval = interval
    }

    public func run() async throws {
        try? await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await book.enqueueNextFirings()
                } catch {
                    book.logger.warning("could not enqueue the schedules' next firings; trying again in \(interval)", metadata: ["error": "\(error)"])
                }
                try await Task.sleep(for: interval)
            }
        }
    }
}
