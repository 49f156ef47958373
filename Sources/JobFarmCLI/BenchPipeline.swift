import Foundation
import Histogram
import JobProtocol
import JobQueue
import JobWorker
import Logging
import Pipelines
import Synchronization

/// The pipeline part of `jobfarm bench queue`: a chain of `steps` steps run by one worker in this process, and the
/// time from a step's handler returning to its child's handler starting (the report, the notice applied by
/// `runAdvance`, the child's enqueue and its pickup), to set beside the idle pickup latency of the same run.
enum BenchPipeline {
    struct Figures {
        var p50: Duration
        var p99: Duration
        var total: Duration
    }

    static func chain(_ farm: JobFarm, steps: Int) async throws -> Figures {
        var yaml = "name: bench-chain\nqueue: chain\nsteps:\n"
        for index in 0..<steps {
            yaml += "  - {id: s\(index), kind: \(ChainStepJob.kind)\(index > 0 ? ", needs: [s\(index - 1)]" : "")}\n"
        }
        let pipeline: ValidatedPipeline
        do throws(DefinitionErrors) {
            pipeline = try ValidatedPipeline.validate(yaml: yaml, file: "bench-chain.yaml", knownKinds: nil)
        } catch {
            throw CLIError(message: "the benchmark's chain does not validate: \(error)")
        }
        let clock = ChainClock()
        var registry = HandlerRegistry()
        registry.register(ChainStepJob(clock: clock))
        var logger = Logger(label: "bench.chain")
        logger.logLevel = .error
        let worker = Worker(
            farm: farm, registry: registry,
            configuration: WorkerConfiguration(queues: ["chain"], concurrency: 1, fetchBatch: 1), logger: logger)
        let task = Task { try await worker.run() }
        defer { worker.beginShutdown() }
        let start = ContinuousClock.now
        let run = try await farm.startRun(pipeline)
        while true {
            if let status = try await farm.runStatus(run.runID), status.isFinal {
                guard status.state == "succeeded" else { throw CLIError(message: "the benchmark's chain ended \(status.state)") }
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        let total = ContinuousClock.now - start
        worker.beginShutdown()
        _ = try? await task.value
        let times = clock.snapshot()
        var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000_000, numberOfSignificantValueDigits: .three)
        for index in 1..<steps {
            guard let ended = times["\(run.runID).s\(index - 1)"]?.end, let started = times["\(run.runID).s\(index)"]?.start else { continue }
            _ = histogram.record(UInt64(max(0, (started - ended).nanoseconds)))
        }
        return Figures(p50: .nanoseconds(Int64(histogram.valueAtPercentile(50))), p99: .nanoseconds(Int64(histogram.valueAtPercentile(99))), total: total)
    }
}

/// A pipeline step for the benchmark: notes when its handler starts and returns.
struct ChainStepJob: JobHandler {
    static let kind = "bench_chain_step"
    let clock: ChainClock
    func run(_ parameters: JSONValue, context: JobContext) async throws -> JSONValue {
        clock.started(context.id)
        defer { clock.ended(context.id) }
        return .null
    }
}

/// Handler start and end times by job id.
final class ChainClock: Sendable {
    private let times = Mutex<[String: (start: ContinuousClock.Instant?, end: ContinuousClock.Instant?)]>([:])

    func started(_ id: String) {
        let now = ContinuousClock.now
        times.withLock { $0[id, default: (nil, nil)].start = now }
    }

    func ended(_ id: String) {
        let now = ContinuousClock.now
        times.withLock { $0[id, default: (nil, nil)].end = now }
    }

    func snapshot() -> [String: (start: ContinuousClock.Instant?, end: ContinuousClock.Instant?)] { times.withLock { $0 } }
}
