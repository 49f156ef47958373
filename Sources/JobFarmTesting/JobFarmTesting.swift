import Foundation
import JobProtocol
import JobQueue
import JobWorker
import Logging
import RedisClient

/// Test support shared by the test targets (in the manner of HummingbirdTesting): the throwaway Redis that
/// scripts/test starts, a farm in a namespace of its own, and an in-process worker scoped to a test body.
public enum TestRedis {
    /// `JOBFARM_TEST_REDIS_URL`, set by scripts/test.
    public static let url: String? = ProcessInfo.processInfo.environment["JOBFARM_TEST_REDIS_URL"]

    /// Integration tests run only with a real Redis; scripts/test always provides one.
    public static var available: Bool { url != nil }

    public static var configuration: RedisConfiguration {
        get throws { try RedisConfiguration(url: url ?? "redis://127.0.0.1:6379") }
    }

    /// A farm in a namespace of its own, so tests never see each other's keys.
    public static func farm(
        namespacePrefix: String = "t", leaseDuration: Duration = .seconds(10), heartbeat: Duration = .seconds(2),
        tierPolicy: TierPolicy = .strict(agingAfter: .seconds(10)), redis: RedisConfiguration? = nil,
        maintenance: Duration = .milliseconds(100), maxLeaseLosses: Int = 3
    ) throws -> JobFarm {
        let configuration = JobFarmConfiguration(
            redis: try redis ?? self.configuration, namespace: namespacePrefix + JobID.make().suffix(12).lowercased(),
            tierPolicy: tierPolicy, leaseDuration: leaseDuration, heartbeatInterval: heartbeat,
            maintenanceInterval: maintenance, maxLeaseLosses: maxLeaseLosses)
        return try JobFarm(configuration: configuration)
    }
}

/// Runs `body` with a worker running inside the test process; the worker shuts down gracefully afterwards.
public func withTestWorker<T>(
    farm: JobFarm, registry: HandlerRegistry, queues: [String]?, concurrency: Int, shutdownGrace: Duration = .seconds(5),
    _ body: (Worker) async throws -> T
) async throws -> T {
    var logger = Logger(label: "test.worker")
    logger.logLevel = .error
    let worker = Worker(
        farm: farm, registry: registry,
        configuration: WorkerConfiguration(queues: queues, concurrency: concurrency, shutdownGrace: shutdownGrace, idleWait: .milliseconds(200)),
        logger: logger)
    let task = Task { try await worker.run() }
    do {
        let result = try await body(worker)
        worker.beginShutdown()
        try await task.value
        return result
    } catch {
        worker.beginShutdown()
        _ = try? await task.value
        throw error
    }
}

/// A test's own failure, with a message.
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Paths inside the package.
public enum PackagePaths {
    /// The package root (this file is Sources/JobFarmTesting/JobFarmTesting.swift).
    public static let root: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The `jobfarm` binary built by `swift build` (scripts/test builds it before the tests).
    public static var jobfarm: String {
        if let path = ProcessInfo.processInfo.environment["JOBFARM_BIN"] { return path }
        return root.appendingPathComponent(".build/debug/jobfarm").path
    }
}
