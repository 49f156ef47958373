import Dispatcher
import Foundation
import JobFarmTesting
import JobKinds
import JobQueue
import JobWorker
import Synchronization
import Testing

/// The routes are written by hand, so these tests hold them to docs/openapi.yaml: the same operations, every
/// answer of the HTTP tests valid against it (`DispatcherClient`), and schemathesis finding nothing. The README's
/// curl examples run in `APIExamplesTests`.
@Suite("Dispatcher against docs/openapi.yaml")
struct ContractTests {
    @Test func theRoutesAreExactlyTheDocumentsOperations() throws {
        let contract = try OpenAPIContract.shared()
        #expect(contract.document["openapi"] as? String == "3.1.0")
        let served = Set(Dispatcher.operations.map { "\($0.method) \($0.path)" })
        #expect(served == contract.operations, "only served: \(served.subtracting(contract.operations)); only documented: \(contract.operations.subtracting(served))")
        #expect(contract.unsupportedKeywords.isEmpty, "teach OpenAPIContract.validate these keywords: \(contract.unsupportedKeywords)")
        #expect(Dispatcher.openAPIDocument == Array(try String(contentsOfFile: openAPIPath, encoding: .utf8).utf8),
                "the embedded document is docs/openapi.yaml (Sources/Dispatcher/openapi.yaml links to it)")
    }

    @Test func everyReferenceResolvesAndEveryErrorIsAProblem() throws {
        let contract = try OpenAPIContract.shared()
        let text = try String(contentsOfFile: openAPIPath, encoding: .utf8)
        let references = text.components(separatedBy: "$ref: '").dropFirst().compactMap { $0.split(separator: "'").first.map(String.init) }
        #expect(references.count > 10)
        for reference in references { #expect(contract.resolve(reference) != nil, "\(reference) does not resolve") }
        for (path, item) in contract.paths {
            for (method, operation) in item as? [String: Any] ?? [:] {
                guard let responses = (operation as? [String: Any])?["responses"] as? [String: Any] else { continue }
                for (status, response) in responses where status.hasPrefix("4") || status.hasPrefix("5") {
                    var response = response as? [String: Any] ?? [:]
                    if let ref = response["$ref"] as? String { response = contract.resolve(ref) as? [String: Any] ?? [:] }
                    let content = response["content"] as? [String: Any] ?? [:]
                    // The Open Inference Protocol's routes answer its own error shape, {"error": "..."}.
                    let expected = path.hasPrefix("/v2") ? "application/json" : "application/problem+json"
                    #expect(Array(content.keys) == [expected], "\(method) \(path) \(status)")
                    if path.hasPrefix("/v2") {
                        let schema = (content[expected] as? [String: Any])?["schema"] as? [String: Any]
                        #expect(schema?["$ref"] as? String == "#/components/schemas/InferenceError", "\(method) \(path) \(status)")
                    }
                }
            }
        }
    }

    /// schemathesis (PyPI) against the running service: every operation, generated and boundary bodies including
    /// invalid ones; no 5xx, and every answer's status, content type, headers and body as documented.
    /// scripts/test installs it and sets JOBFARM_SCHEMATHESIS.
    @Test(.enabled(if: TestRedis.available && ProcessInfo.processInfo.environment["JOBFARM_SCHEMATHESIS"] != nil,
                   "needs JOBFARM_TEST_REDIS_URL and JOBFARM_SCHEMATHESIS (scripts/test sets both)"),
          .timeLimit(.minutes(5)))
    func schemathesisFindsNoServerErrorAndNoAnswerOffTheDocument() async throws {
        let executable = ProcessInfo.processInfo.environment["JOBFARM_SCHEMATHESIS"]!
        let farm = try TestRedis.farm()
        // Schemathesis reuses the ids that submissions answered, and no worker runs here: a short longest wait keeps
        // each wait on such a pending job (a longer timeout is answered 400, as documented) from taking 30 s.
        // API keys on: schemathesis sends an operator key, and checks that each secured operation refuses a request
        // without it (ignored_auth), and that an undocumented method gets 405 with Allow.
        let (key, _) = try await apiKeys(farm).create(tenant: "schemathesis", tiers: farm.configuration.tiers, isOperator: true)
        var configuration = DispatcherConfiguration(port: 0, authentication: .apiKeys)
        configuration.maxWait = .seconds(2)
        configuration.defaultWait = .seconds(1)
        let (status, output) = try await withDispatcher(farm: farm, configuration: configuration) { api in
            try await run(executable, [
                "run", "\(api.base)/openapi.yaml", "--url", api.base,
                "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,"
                    + "ignored_auth,unsupported_method,allow_header_conformance",
                "--header", "Authorization: Bearer \(key)",
                "--phases", "examples,coverage,fuzzing", "--max-examples", "25", "--workers", "1", "--seed", "1",
                "--request-timeout", "30", "--generation-database", "none", "--no-color",
            ], in: FileManager.default.temporaryDirectory, timeout: .seconds(200))  // it keeps a .schemathesis/ folder there
        }
        #expect(status == 0, "schemathesis found problems:\n\(output.suffix(6000))")
        #expect(output.contains("operations") || output.contains("Operations"), "\(output.suffix(2000))")
    }
}

/// The body of the first fenced block whose info string is `info`.
func codeBlock(_ markdown: String, info: String) -> String? {
    guard let start = markdown.range(of: "```\(info)\n") else { return nil }
    guard let end = markdown.range(of: "\n```", range: start.upperBound..<markdown.endIndex) else { return nil }
    return String(markdown[start.upperBound..<end.lowerBound])
}

/// Runs a bash script; returns its standard output and error, throws on a non-zero exit.
@discardableResult
func shell(_ script: String) async throws -> String {
    let (status, output) = try await run("/bin/bash", ["-c", script], timeout: .seconds(60))
    guard status == 0 else { throw TestFailure("script exited \(status):\n\(output)") }
    return output
}

/// Runs a program (looked up on PATH unless absolute) with a time limit, without blocking a thread of the
/// cooperative pool (the dispatcher under test runs there); returns its exit status and output.
func run(_ program: String, _ arguments: [String], in directory: URL? = nil, timeout: Duration) async throws -> (Int32, String) {
    let process = Process()
    if let directory { process.currentDirectoryURL = directory }
    if program.hasPrefix("/") {
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = arguments
    } else {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = [program] + arguments
    }
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("dispatcher-test-\(UUID().uuidString).out")
    _ = FileManager.default.createFile(atPath: file.path, contents: nil)
    let handle = try FileHandle(forWritingTo: file)
    defer { try? FileManager.default.removeItem(at: file) }
    process.standardOutput = handle
    process.standardError = handle
    let (ended, end) = AsyncStream.makeStream(of: Void.self)
    process.terminationHandler = { _ in
        end.yield()
        end.finish()
    }
    try process.run()
    let running = process
    let timedOut = Mutex(false)
    let timer = Task {
        try await Task.sleep(for: timeout)
        timedOut.withLock { $0 = true }
        running.terminate()
    }
    for await _ in ended {}
    timer.cancel()
    try handle.close()
    let output = (try? String(contentsOf: file, encoding: .utf8)) ?? ""
    if timedOut.withLock({ $0 }) { throw TestFailure("\(program) ran past \(timeout):\n\(output.suffix(4000))") }
    return (process.terminationStatus, output)
}
