import Foundation
import JobProtocol
import JobWorker

/// `noop`: does nothing; the benchmark's job.
public struct NoopJob: JobHandler {
    public static let kind = "noop"
    public init() {}
    public func run(_ parameters: JSONValue, context: JobContext) async throws -> JSONValue { .null }
}

/// `echo`: returns its payload.
public struct EchoJob: JobHandler {
    public static let kind = "echo"
    public init() {}
    public func run(_ parameters: JSONValue, context: JobContext) async throws -> JSONValue { parameters }
}

/// `sleep`: waits, reporting progress; honours cancellation unless told to block its thread.
public struct SleepJob: JobHandler {
    public static let kind = "sleep"

    public struct Parameters: Codable, Sendable {
        /// How long to sleep.
        public var seconds: Double
        /// Progress updates along the way.
        public var steps: Int?
        /// Block the thread instead of suspending (a handler that ignores cancellation, for tests).
        public var blocking: Bool?
    }

    public struct Output: Codable, Sendable {
        public var slept: Double
        public var attempt: Int
    }

    public init() {}

    public func run(_ parameters: Parameters, context: JobContext) async throws -> Output {
        guard parameters.seconds >= 0, parameters.seconds <= 86_400 else {
            throw JobError.nonRetryable("'seconds' must be 0…86400 (got \(parameters.seconds))")
        }
        let steps = max(1, min(parameters.steps ?? 10, 1000))
        let step = parameters.seconds / Double(steps)
        for index in 1...steps {
            if parameters.blocking == true {
                blockThread(seconds: step)
            } else {
                try await Task.sleep(for: .milliseconds(Int64(step * 1000)))
            }
            await context.progress(Double(index) / Double(steps))
        }
        return Output(slept: parameters.seconds, attempt: context.attempt)
    }
}

/// `fail`: fails its first `times` attempts (all of them when absent), then succeeds.
public struct FailJob: JobHandler {
    public static let kind = "fail"

    public struct Parameters: Codable, Sendable {
        public var message: String?
        /// false: a non-retryable failure, straight to the dead letters.
        public var retryable: Bool?
        /// Attempts that fail before one succeeds.
        public var times: Int?
    }

    public let retryPolicy: RetryPolicy

    /// - Parameter retryPolicy: tests use short delays.
    public init(retryPolicy: RetryPolicy = .standard) {
        self.retryPolicy = retryPolicy
    }

    public func run(_ parameters: Parameters, context: JobContext) async throws -> JSONValue {
        if let times = parameters.times, context.attempt > times {
            return .object(["succeeded_on_attempt": .number(Double(context.attempt))])
        }
        let message = parameters.message ?? "failed on purpose (attempt \(context.attempt))"
        if parameters.retryable == false { throw JobError.nonRetryable(message) }
        throw JobError.retryable(message)
    }
}

extension HandlerRegistry {
    /// A registry with the built-in kinds: noop, echo, sleep, fail.
    public static func builtins(failRetryPolicy: RetryPolicy = .standard) -> HandlerRegistry {
        var registry = HandlerRegistry()
        registry.register(NoopJob())
        registry.register(EchoJob())
        registry.register(SleepJob())
        registry.register(FailJob(retryPolicy: failRetryPolicy))
        return registry
    }
}

/// Blocks the calling thread (deliberately, for the blocking `sleep` variant).
private func blockThread(seconds: Double) {
    var spec = timespec(tv_sec: Int(seconds), tv_nsec: Int((seconds - Double(Int(seconds))) * 1e9))
    nanosleep(&spec, nil)
}
