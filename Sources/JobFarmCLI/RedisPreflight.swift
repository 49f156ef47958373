import JobQueue
import Logging
import ServiceLifecycle
import UnixSignals
import Synchronization

/// The check `jobfarm worker` and `jobfarm serve` run before they start: Redis must answer, accept the credentials
/// and the database, and load the protocol's scripts.
///
/// A wrong password, user, database or URL cannot mend itself: it is reported at once (the process exits with
/// `EX_CONFIG`). An unreachable or not yet ready Redis may: the worker's check (`run`) retries with a growing pause,
/// logging each wait, until Redis answers or SIGTERM/SIGINT arrives; the dispatcher's (`checkOnce`) logs it and lets
/// the dispatcher start (it answers `/readyz` with 503 until Redis answers).
struct RedisPreflight {
    let farm: JobFarm
    let logger: Logger
    /// Pause after the first failed attempt; doubled after each further one, up to `maximumPause`.
    var firstPause: Duration = .milliseconds(500)
    var maximumPause: Duration = .seconds(30)

    /// What the check ended with.
    enum Outcome: Sendable, Equatable {
        case ready
        /// SIGTERM or SIGINT arrived while waiting for Redis.
        case interrupted
    }

    /// The pause after `failures` failed attempts (1, 2, …): 0.5 s, 1 s, 2 s, … up to `maximumPause`.
    func pause(afterFailures failures: Int) -> Duration {
        min(maximumPause, firstPause * (1 << min(max(0, failures - 1), 20)))
    }

    /// Waits until Redis is ready, SIGTERM/SIGINT arrives, or a configuration error is met (thrown as a `CLIError`).
    func run() async throws -> Outcome {
        let result = Mutex<Result<Outcome, any Error>>(.success(.interrupted))
        let check = ClosureService {
            let outcome: Result<Outcome, any Error>
            do {
                try await cancelWhenGracefulShutdown { try await self.waitUntilReady() }
                outcome = .success(.ready)
            } catch is CancellationError {
                outcome = .success(.interrupted)
            } catch {
                outcome = .failure(error)
            }
            result.withLock { $0 = outcome }
        }
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: check, successTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        let outcome = try result.withLock { try $0.get() }
        if outcome == .interrupted { logger.notice("stopped while waiting for Redis at \(farm.configuration.redis)") }
        return outcome
    }

    /// Tries until Redis is ready; throws at once on anything a retry cannot mend.
    func waitUntilReady() async throws {
        var failures = 0
        while true {
            do {
                try await farm.checkConnection()
                if failures > 0 { logger.notice("Redis at \(farm.configuration.redis) answers; starting") }
                return
            } catch let error as JobFarmError where error.isConnectionError {
                failures += 1
                let pause = pause(afterFailures: failures)
                let state = if case .redisNotReady = error { "not ready" } else { "unreachable" }
                logger.warning(
                    "Redis at \(farm.configuration.redis) \(state): retrying in \(Self.seconds(pause)) (attempt \(failures))",
                    metadata: ["error": "\(error)"])
                try await Task.sleep(for: pause)
            } catch let error as JobFarmError {
                throw CLIError(error)
            }
        }
    }

    /// One attempt: returns true when Redis is ready, false (logged) when it is unreachable or not ready yet;
    /// throws a `CLIError` on anything a retry cannot mend (exit 78, or 64 for a URL that does not parse).
    @discardableResult
    func checkOnce() async throws -> Bool {
        do {
            try await farm.checkConnection()
            return true
        } catch let error as JobFarmError where error.isConnectionError {
            logger.warning(
                "Redis at \(farm.configuration.redis) \(error.serverCondition == nil ? "unreachable" : "not ready"): starting anyway; /readyz answers 503 until it does",
                metadata: ["error": "\(error)"])
            return false
        } catch let error as JobFarmError {
            throw CLIError(error)
        }
    }

    /// `0.5 s`, `2 s`, `30 s`.
    static func seconds(_ duration: Duration) -> String {
        let milliseconds = duration.milliseconds
        return milliseconds % 1000 == 0 ? "\(milliseconds / 1000) s" : "\(Double(milliseconds) / 1000) s"
    }
}
