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

    /// `JOBFARM_TEST_REDIS_CLUSTER_URL`: the 3-master, 3-replica Redis Cluster scripts/test starts
    /// (`redis+cluster://…`).
    public static let clusterURL: String? = ProcessInfo.processInfo.environment["JOBFARM_TEST_REDIS_CLUSTER_URL"]

    /// The servers a test given `arguments: TestRedis.servers` runs against: the single server, and the cluster when
    /// scripts/test started one.
    public static var servers: [TestServer] { clusterURL == nil ? [.single] : [.single, .cluster] }

    public static var configuration: RedisConfiguration {
        get throws { try RedisConfiguration(url: url ?? "redis://127.0.0.1:6379") }
    }

    /// A farm in a namespace of its own, so tests never see each other's keys.
    public static func farm(
        namespacePrefix: String = "t", leaseDuration: Duration = .seconds(10), heartbeat: Duration = .seconds(2),
        tierPolicy: TierPolicy = .strict(agingAfter: .seconds(10)), redis: RedisConfiguration? = nil,
        maintenance: Duration = .milliseconds(100), maxLeaseLosses: Int = 3, on server: TestServer = .single
    ) throws -> JobFarm {
        let configuration = JobFarmConfiguration(
            redis: try redis ?? server.configuration, namespace: namespacePrefix + JobID.make().suffix(12).lowercased(),
            tierPolicy: tierPolicy, leaseDuration: leaseDuration, heartbeatInterval: heartbeat,
            maintenanceInterval: maintenance, maxLeaseLosses: maxLeaseLosses)
        return try JobFarm(configuration: configuration)
    }
}

/// A Redis a test runs against (`@Test(arguments: TestRedis.servers)`).
public enum TestServer: String, Sendable, CaseIterable, CustomStringConvertible {
    /// The single redis-server (`JOBFARM_TEST_REDIS_URL`).
    case single
    /// The Redis Cluster (`JOBFARM_TEST_REDIS_CLUSTER_URL`).
    case cluster

    public var description: String { rawValue }

    /// Its configuration.
    public var configuration: RedisConfiguration {
        get throws {
            switch self {
            case .single: return try TestRedis.configuration
            case .cluster:
                guard let url = TestRedis.clusterURL else { throw TestFailure("no JOBFARM_TEST_REDIS_CLUSTER_URL: run the tests with scripts/test") }
                return try RedisConfiguration(url: url)
            }
        }
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

/// A redis-server of a test's own (for restarts, AUTH and unix sockets), in a temporary directory.
public final class OwnRedisServer: @unchecked Sendable {
    // @unchecked: used from one test task.
    public let port: Int
    public let directory: URL
    private var process: Process?
    public let extraArguments: [String]

    public init(extraArguments: [String] = []) throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-redis-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        port = Self.freePort()
        self.extraArguments = extraArguments
        try start()
    }

    public var url: String { "redis://127.0.0.1:\(port)" }
    public var socketPath: String { directory.appendingPathComponent("redis.sock").path }

    public func start() throws {
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
    public func stop() {
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
    public func crash() {
        guard let process else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        self.process = nil
    }

    /// SIGSTOP: Redis keeps its connections open and answers nothing (a server hung or cut off), until `resume()`.
    public func pause() {
        guard let process else { return }
        kill(process.processIdentifier, SIGSTOP)
    }

    /// SIGCONT after `pause()`: Redis answers what it was sent meanwhile.
    public func resume() {
        guard let process else { return }
        kill(process.processIdentifier, SIGCONT)
    }

    /// Credentials for SHUTDOWN when the server requires them.
    public var authUser: String?
    public var authPassword: String?

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    public static func freePort() -> Int {
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
