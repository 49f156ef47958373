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

/// A redis-server of a test's own (for restarts, AUTH and unix sockets), in a temporary directory.
final class OwnRedisServer: @unchecked Sendable {
    // @unchecked: used from one test task.
    let port: Int
    let directory: URL
    private var process: Process?
    let extraArguments: [String]

    init(extraArguments: [String] = []) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        port = Self.freePort()
        self.extraArguments = extraArguments
        try start()
    }

    var url: String { "redis://127.0.0.1:\(port)" }
    var socketPath: String { directory.appendingPathComponent("redis.sock").path }

    func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/redis-server")
        process.arguments = ["--port", "\(port)", "--bind", "127.0.0.1", "--dir", directory.path, "--save", "",
                             "--unixsocket", socketPath, "--logfile", directory.appendingPathComponent("redis.log").path] + extraArguments
        try process.run()
        self.process = process
        for _ in 0..<200 {
            if (try? ping()) == true { return }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw TestFailure("redis-server on \(port) did not start")
    }

    private func ping() throws -> Bool {
        let client = RedisClient(configuration: RedisConfiguration(endpoint: .unix(path: socketPath), connectTimeout: .milliseconds(100)))
        defer { client.close() }
        do {
            let reply = try client.pipelineBlocking([.command(RedisCommand("PING"))])[0]
            return reply == .status("PONG") || reply.errorMessage?.contains("NOAUTH") == true
        } catch RedisError.authenticationRequired {
            return true  // up, and wants a password
        }
    }

    /// SHUTDOWN: Redis writes its AOF and exits (SIGKILL after 10 s if it does not).
    /// A command, not SIGTERM: the test process may hand its children a signal mask that blocks SIGTERM.
    func stop() {
        guard let process else { return }
        var config = RedisConfiguration(endpoint: .unix(path: socketPath), connectTimeout: .milliseconds(500))
        config.username = authUser
        config.password = authPassword
        let client = RedisClient(configuration: config)
        _ = try? client.pipelineBlocking([.command(RedisCommand("SHUTDOWN"))])
        client.close()
        let deadline = Date().addingTimeInterval(10)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.01) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        self.process = nil
    }

    /// SIGKILL: Redis dies without a chance to write anything more (with `appendfsync always` every acknowledged
    /// write is on disk already).
    func crash() {
        guard let process else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    /// Credentials for SHUTDOWN when the server requires them.
    var authUser: String?
    var authPassword: String?

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
