import Foundation
import JobFarmTesting
import JobKinds
import JobProtocol
import JobQueue
import JobWorker
import Logging
import RedisClient
import Testing

/// A worker running inside the test process with the built-in kinds (fast retries), stopped at the end of `body`.
func withWorker<T>(
    farm: JobFarm, registry: HandlerRegistry = .builtins(failRetryPolicy: .exponentialJitter(base: .milliseconds(20), cap: .milliseconds(100), maxAttempts: 1000, jitter: 0)),
    queues: [String]? = ["default"], concurrency: Int = 4, shutdownGrace: Duration = .seconds(5),
    _ body: (Worker) async throws -> T
) async throws -> T {
    try await withTestWorker(farm: farm, registry: registry, queues: queues, concurrency: concurrency, shutdownGrace: shutdownGrace, body)
}

/// Polls `condition` until true or `timeout` (for observing other processes; the library itself never polls).
func eventually(timeout: Duration = .seconds(10), _ what: String = "condition", _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return }
        try await Task.sleep(for: .milliseconds(20))
    }
    Issue.record("timed out after \(timeout) waiting for \(what)")
    throw TestFailure("timed out waiting for \(what)")
}

/// Runs a raw Redis command against the test server.
func redis(_ farm: JobFarm, _ arguments: String...) async throws -> RESPValue {
    let client = RedisClient(configuration: farm.configuration.redis, name: "test")
    defer { client.close() }
    return try await client.send([RedisCommand(arguments)])[0]
}

/// A `jobfarm` child process.
final class ChildProcess: @unchecked Sendable {
    // @unchecked: Process is used from the test task only; the output pipe is read on its own handler queue.
    let process = Process()
    private let output = Pipe()
    private let lock = NSLock()
    private var captured = Data()

    /// `environment` is added to the test's own; `unset` names variables to leave out. The OpenBLAS kernel chooser
    /// and the small-batch kernel calibration are off unless `environment` turns them on: worker tests neither
    /// measure kernels (seconds of CPU in a debug build, beside timing-sensitive tests) nor write to ~/.cache.
    init(_ arguments: [String], environment: [String: String] = [:], unset: [String] = []) throws {
        process.executableURL = URL(fileURLWithPath: PackagePaths.jobfarm)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        env["JOBFARM_BLAS_AUTOTUNE"] = "0"
        env["JOBFARM_KERNEL_CALIBRATION"] = "0"
        for (key, value) in environment { env[key] = value }
        for key in unset { env.removeValue(forKey: key) }
        process.environment = env
        process.standardOutput = output
        process.standardError = output
        output.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self else { return }
            self.lock.lock()
            self.captured.append(data)
            self.lock.unlock()
        }
        try process.run()
    }

    var text: String {
        lock.lock()
        defer { lock.unlock() }
        return String(decoding: captured, as: UTF8.self)
    }

    func signal(_ number: Int32) { kill(process.processIdentifier, number) }

    /// Waits for exit (up to `timeout`); returns the exit status, or nil if still running.
    @discardableResult
    func waitForExit(timeout: Duration = .seconds(30)) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return process.isRunning ? nil : process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        output.fileHandleForReading.readabilityHandler = nil
    }
}

