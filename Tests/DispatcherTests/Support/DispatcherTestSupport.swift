import Dispatcher
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Hummingbird
import JobFarmTesting
import JobProtocol
import JobQueue
import Logging
import NIOCore
import RedisClient
import ServiceLifecycle
import Testing

/// One HTTP answer, its body parsed when it is JSON.
struct HTTPAnswer: Sendable {
    var status: Int
    var headers: [String: String]
    var text: String
    var json: JSONValue?

    var contentType: String { headers["content-type"] ?? "" }
    /// The `pointer`s of a problem's `errors`, sorted.
    var pointers: [String] {
        guard case .array(let items)? = json?["errors"] else { return [] }
        return items.compactMap { $0["pointer"]?.stringValue }.sorted()
    }
}

/// A client for a dispatcher running on a loopback port. Every answer is checked against docs/openapi.yaml:
/// the route and status must be documented, with the content type and a body that fits the schema.
struct DispatcherClient: Sendable {
    let base: String
    let contract: OpenAPIContract
    /// Sent as `Authorization: Bearer <key>` when set.
    var key: String?

    init(base: String, contract: OpenAPIContract, key: String? = nil) {
        self.base = base
        self.contract = contract
        self.key = key
    }

    /// The same dispatcher with another key (`nil`: none).
    func with(key: String?) -> DispatcherClient { DispatcherClient(base: base, contract: contract, key: key) }

    @discardableResult
    func call(
        _ method: String, _ path: String, json body: String? = nil, contentType: String? = "application/json",
        headers: [String: String] = [:], checkContract: Bool = true, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> HTTPAnswer {
        var request = URLRequest(url: URL(string: base + path)!)
        request.httpMethod = method
        request.timeoutInterval = 90
        if let key { request.setValue("Bearer \(key)", forHTTPHeaderField: "Authorization") }
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        if let body {
            request.httpBody = Data(body.utf8)
            if let contentType { request.setValue(contentType, forHTTPHeaderField: "Content-Type") }
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = try #require(response as? HTTPURLResponse)
        var headers: [String: String] = [:]
        for (key, value) in http.allHeaderFields {
            if let key = key as? String, let value = value as? String { headers[key.lowercased()] = value }
        }
        let text = String(decoding: data, as: UTF8.self)
        let answer = HTTPAnswer(status: http.statusCode, headers: headers, text: text,
                                json: headers["content-type"]?.contains("json") == true ? try? JSONValue(parsing: text) : nil)
        if checkContract {
            let path = String(path.split(separator: "?", maxSplits: 1).first ?? "")
            for issue in contract.check(method: method, path: path, status: answer.status, contentType: answer.contentType, body: answer.json) {
                Issue.record("\(method) \(path) → \(answer.status): \(issue)\nbody: \(text.prefix(500))", sourceLocation: sourceLocation)
            }
        }
        return answer
    }

    func post(_ path: String, _ body: String, headers: [String: String] = [:], sourceLocation: SourceLocation = #_sourceLocation) async throws -> HTTPAnswer {
        try await call("POST", path, json: body, headers: headers, sourceLocation: sourceLocation)
    }

    func get(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> HTTPAnswer {
        try await call("GET", path, sourceLocation: sourceLocation)
    }
}

/// Runs `body` against a real dispatcher on an ephemeral loopback port (a Hummingbird `Application` in a
/// `ServiceGroup`, as `jobfarm serve` runs it), shut down gracefully afterwards. Without API keys unless the
/// configuration says otherwise (the access tests do).
func withDispatcher<T: Sendable>(
    farm: JobFarm, configuration: DispatcherConfiguration = DispatcherConfiguration(port: 0, authentication: .disabled),
    access: AccessControl? = nil, _ body: @Sendable (DispatcherClient) async throws -> T
) async throws -> T {
    var logger = Logger(label: "test.dispatcher")
    logger.logLevel = .error
    var configuration = configuration
    configuration.port = 0
    // An outbox of each dispatcher's own (the default is per process: tests run several dispatchers).
    let outboxDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-outbox-\(UUID().uuidString)")
    if configuration.outbox.path == nil { configuration.outbox.path = outboxDirectory.appendingPathComponent("outbox.sqlite").path }
    defer { try? FileManager.default.removeItem(at: outboxDirectory) }
    let dispatcher = try Dispatcher(farm: farm, configuration: configuration, logger: logger, access: access)
    let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
    let application = dispatcher.makeApplication { channel in
        portContinuation.yield(channel.localAddress?.port ?? 0)
        portContinuation.finish()
    }
    // The forwarder first, as `jobfarm serve` runs it: shutdown runs in reverse order.
    let group = ServiceGroup(services: [dispatcher.makeOutboxForwarder(), application], logger: logger)
    let task = Task { try await group.run() }
    var iterator = ports.makeAsyncIterator()
    guard let port = await iterator.next(), port > 0 else {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
        throw TestFailure("the dispatcher did not start")
    }
    let client = DispatcherClient(base: "http://127.0.0.1:\(port)", contract: try OpenAPIContract.shared())
    do {
        let result = try await body(client)
        await group.triggerGracefulShutdown()
        try await task.value
        return result
    } catch {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
        throw error
    }
}

/// `docs/openapi.yaml` in the package.
var openAPIPath: String { PackagePaths.root.appendingPathComponent("docs/openapi.yaml").path }

/// Waits until `count` workers are in the registry (a worker registers at its first heartbeat).
func waitUntilRegistered(_ farm: JobFarm, count: Int = 1) async throws {
    for _ in 0..<100 {
        if try await farm.workers().filter({ !$0.fields.isEmpty }).count >= count { return }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw TestFailure("no worker registered within 5 s")
}

/// The elements of a JSON array (none for anything else).
func items(_ value: JSONValue?) -> [JSONValue] {
    if case .array(let elements)? = value { return elements }
    return []
}

/// The API keys of `farm`'s namespace, for tests that make and revoke keys.
func apiKeys(_ farm: JobFarm) -> RedisAPIKeys {
    RedisAPIKeys(client: RedisClient(configuration: farm.configuration.redis, name: "test-keys"), namespace: farm.configuration.namespace)
}

/// A `jobfarm serve` process on a free loopback port, on the test Redis.
struct ServeProcess {
    let process: Process
    let base: String
    let log: URL

    /// Starts `jobfarm serve --port 0` with `arguments` and waits for its "listening on" line.
    static func start(namespace: String, arguments: [String] = [], environment: [String: String] = [:]) async throws -> ServeProcess {
        let log = FileManager.default.temporaryDirectory.appendingPathComponent("serve-\(namespace)-\(UUID().uuidString.prefix(8)).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: PackagePaths.jobfarm)
        process.arguments = ["serve", "--redis-url", TestRedis.url!, "--namespace", namespace, "--port", "0"] + arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        for _ in 0..<400 {
            let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("listening on ") }) {
                return ServeProcess(process: process, base: String(line.dropFirst("listening on ".count)), log: log)
            }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        if process.isRunning { process.terminate() }
        throw TestFailure("jobfarm serve did not start:\n\((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
    }

    func stop() {
        if process.isRunning { process.terminate() }
        try? FileManager.default.removeItem(at: log)
    }
}
