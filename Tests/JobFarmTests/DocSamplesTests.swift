import Foundation
import JobFarmTesting
import JobKinds
import JobProtocol
import JobQueue
import JobWorker
import Logging
import RedisClient
import ServiceLifecycle
import UnixSignals
import Testing

// The README's Swift samples, line for line, compiled with the tests: the functions below give them what they
// assume (a list of requests, a logger). `readmeSamplesAppearHereVerbatim` fails when the README and this file
// drift apart, so a sample that no longer compiles cannot stay in the README.

/// README, "As a library": the `JobQueue` calls.
func readmeLibrarySample(requests: [EnqueueRequest]) async throws {
    let farm = try JobFarm(configuration: JobFarmConfiguration(redis: RedisConfiguration(url: "redis://127.0.0.1:6380")))
    let id = try await farm.enqueue(EnqueueRequest(kind: "echo", queue: "default", tier: "premium", payload: .object(["x": .number(1)])))
    let ids = try await farm.enqueue(requests)                  // bulk: chunks of 1000 jobs, pipelined
    let status = try await farm.wait(for: id, timeout: .seconds(30))   // woken by pub/sub, no polling
    try await farm.cancel(id: id)
    let stats = try await farm.stats()                          // depth, in flight, delayed, dead, oldest age per tier
    let letters = try await farm.deadLetters(queue: "default", filter: DeadLetterFilter(reason: "exhausted"))
    try await farm.requeueDeadLetters(queue: "default", filter: DeadLetterFilter(reason: "exhausted"), dryRun: true)
    _ = (ids, status, stats, letters)
}

/// README, "As a library": a handler of one's own.
struct Resize: JobHandler {
    static let kind = "resize"
    struct Parameters: Codable, Sendable { var width: Int }
    func run(_ p: Parameters, context: JobContext) async throws -> Int {
        guard p.width > 0 else { throw JobError.nonRetryable("width must be positive") }
        await context.progress(0.5)
        return p.width * 2
    }
}

/// README, "As a library": a worker as a `Service`.
func readmeWorkerSample(farm: JobFarm, logger: Logger) async throws {
    var registry = HandlerRegistry.builtins()
    registry.register(Resize())
    let worker = Worker(farm: farm, registry: registry, configuration: WorkerConfiguration(concurrency: 16))
    try await ServiceGroup(services: [worker], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger).run()
}

@Suite struct DocSamplesTests {
    /// Every line of every ```swift block of the README is in this file, in the same order (indentation aside).
    @Test func readmeSamplesAppearHereVerbatim() throws {
        let readme = try String(contentsOf: PackagePaths.root.appendingPathComponent("README.md"), encoding: .utf8)
        let source = try String(contentsOf: URL(fileURLWithPath: #filePath), encoding: .utf8)
        let compiled = source.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let blocks = swiftBlocks(readme)
        #expect(!blocks.isEmpty, "the README has Swift samples")
        for block in blocks {
            var position = 0
            for line in block.split(separator: "\n").map({ $0.trimmingCharacters(in: .whitespaces) }) where !line.isEmpty {
                guard let found = compiled[position...].firstIndex(of: line) else {
                    Issue.record("README line not compiled by Tests/JobFarmTests/DocSamplesTests.swift (or out of order): \(line)")
                    break
                }
                position = found + 1
            }
        }
    }

    /// The Resize sample does what the README says.
    @Test func resizeSampleRuns() async throws {
        let context = JobContext(id: "r1", kind: Resize.kind, queue: "default", tier: "standard", attempt: 1, maxAttempts: 1,
                                 deadline: .now + .seconds(5), trace: [:], logger: Logger(label: "test"))
        #expect(try await Resize().run(.init(width: 21), context: context) == 42)
        await #expect(throws: JobError.self) { try await Resize().run(.init(width: 0), context: context) }
    }

    func swiftBlocks(_ markdown: String) -> [String] {
        var blocks: [String] = []
        var rest = markdown[...]
        while let start = rest.range(of: "```swift\n") {
            guard let end = rest.range(of: "\n```", range: start.upperBound..<rest.endIndex) else { break }
            blocks.append(String(rest[start.upperBound..<end.lowerBound]))
            rest = rest[end.upperBound...]
        }
        return blocks
    }
}
