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

    @discardableResult
    func call(
        _ method: String, _ path: String, json body: String? = nil, contentType: String? = "application/json",
        headers extraHeaders: [String: String] = [:], checkContract: Bool = true, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> HTTPAnswer {
        var request = URLRequest(url: URL(string: base + path)!)
        request.httpMethod = method
        for (name, value) in extraHeaders { request.setValue(value, forHTTPHeaderField: name) }
        request.timeoutInterval = 90
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

    func post(_ path: String, _ body: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> HTTPAnswer {
        try await call("POST", path, json: body, sourceLocation: sourceLocation)
    }

    func get(_ path: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> HTTPAnswer {
        try await call("GET", path, sourceLocation: sourceLocation)
    }
}

/// Runs `body` against a real dispatcher on an ephemeral loopback port (a Hummingbird `Application` in a
/// `ServiceGroup`, as `jobfarm serve` runs it), shut down gracefully afterwards.
func withDispatcher<T: Sendable>(
    farm: JobFarm, configuration: DispatcherConfiguration = DispatcherConfiguration(port: 0),
    _ body: @Sendable (DispatcherClient) async throws -> T
) async throws -> T {
    var logger = Logger(label: "test.dispatcher")
    logger.logLevel = .error
    var configuration = configuration
    configuration.port = 0
    // An outbox of each dispatcher's own (the default is per process: tests run several dispatchers).
    let outboxDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-outbox-\(UUID().uuidString)")
    if configuration.outbox.path == nil { configuration.outbox.path = outboxDirectory.appendingPathComponent("outbox.sqlite").path }
    defer { try? FileManager.default.removeItem(at: outboxDirectory) }
    let dispatcher = try Dispatcher(farm: farm, configuration: configuration, logger: logger)
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
