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

    /// The benchmark's own pipeline, validated; a mistake in it is an error naming which one.
    static func validated(_ yaml: String, file: String, what: String) throws -> ValidatedPipeline {
        do throws(DefinitionErrors) {
            return try ValidatedPipeline.validate(yaml: yaml, file: file, knownKinds: nil)
        } catch {
            throw CLIError(message: "the benchmark's \(what) does not validate: \(error)")
        }
    }

    /// Starts a run of `pipeline` and polls it to its end; a run that did not succeed is an error.
    static func runToEnd(_ pipeline: ValidatedPipeline, on farm: JobFarm, what: String) async throws -> (RunStart, Duration) {
        let start = ContinuousClock.now
        let run = try await farm.startRun(pipeline)
        while true {
            if let status = try await farm.runStatus(run.runID), status.isFinal {
                guard status.state == "succeeded" else { throw CLIError(message: "the benchmark's \(what) ended \(status.state)") }
                return (run, ContinuousClock.now - start)
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    static func chain(_ farm: JobFarm, steps: Int) async throws -> Figures {
        var yaml = "name: bench-chain\nqueue: chain\nsteps:\n"
        for index in 0..<steps {
            yaml += "  - {id: s\(index), kind: \(ChainStepJob.kind)\(index > 0 ? ", needs: [s\(index - 1)]" : "")}\n"
        }
        let pipeline = try validated(yaml, file: "bench-chain.yaml", what: "chain")
        let clock = ChainClock()
        let (worker, task) = startBenchWorker(farm, handler: ChainStepJob(clock: clock), label: "bench.chain",
                                              configuration: WorkerConfiguration(queues: ["chain"], concurrency: 1, fetchBatch: 1))
        defer { worker.beginShutdown() }
        let (run, total) = try await runToEnd(pipeline, on: farm, what: "chain")
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

extension BenchPipeline {
    /// A fan-out and its fan-in, as a pipeline step and as a batch.
    struct FanFigures {
        /// Root's handler returns → first item's handler starts.
        var firstItem: Duration
        /// Root's handler returns → the last item's handler starts (the whole fan-out enqueued and picked up).
        var allItemsStarted: Duration
        /// The last item's handler returns → the child step's handler starts (the fan-in: every item's notice applied).
        var fanIn: Duration
        /// The whole run.
        var total: Duration
        /// A batch of the same size: the last job's handler returns → the completion callback's handler starts.
        var batchCallback: Duration
        var batchTotal: Duration
    }

    /// `root` → `fan` (a `for_each` over `items` elements) → `after`, on a worker in this process with
    /// `concurrency` slots; then a batch of `items` jobs with a completion callback on the same worker.
    static func fanOut(_ farm: JobFarm, items: Int, concurrency: Int = 8) async throws -> FanFigures {
        let yaml = """
            name: bench-fan
            queue: fan
            params:
              n: \(items)
            steps:
              - {id: root, kind: \(ChainStepJob.kind)}
              - {id: fan, kind: \(ChainStepJob.kind), needs: [root], for_each: "${steps.root.result}"}
              - {id: after, kind: \(ChainStepJob.kind), needs: [fan]}
            """
        let pipeline = try validated(yaml, file: "bench-fan.yaml", what: "fan-out")
        let clock = ChainClock()
        let (worker, task) = startBenchWorker(farm, handler: ChainStepJob(clock: clock, rootItems: items), label: "bench.fan",
                                              configuration: WorkerConfiguration(queues: ["fan"], concurrency: concurrency))
        defer { worker.beginShutdown() }
        let (run, total) = try await runToEnd(pipeline, on: farm, what: "fan-out")
        var times = clock.snapshot()
        let itemTimes = (0..<items).compactMap { times["\(run.runID).fan.\($0)"] }
        guard let rootEnd = times["\(run.runID).root"]?.end, let afterStart = times["\(run.runID).after"]?.start,
              itemTimes.count == items else {
            throw CLIError(message: "the benchmark's fan-out ran \(itemTimes.count) of \(items) items")
        }
        let starts = itemTimes.compactMap(\.start)
        let ends = itemTimes.compactMap(\.end)
        guard let firstStart = starts.min(), let lastStart = starts.max(), let lastEnd = ends.max() else {
            throw CLIError(message: "the benchmark's fan-out has items without times")
        }
        // The same fan-out as a batch: the completion callback is the fan-in.
        let batchStart = ContinuousClock.now
        let jobs = (0..<items).map { EnqueueRequest(kind: ChainStepJob.kind, queue: "fan", payload: .number(Double($0))) }
        let batch = try await farm.createBatch(jobs: jobs, onComplete: BatchCallback(kind: ChainStepJob.kind, queue: "fan"))
        let callback = "\(batch.id).complete"
        while clock.snapshot()[callback]?.start == nil {
            guard ContinuousClock.now - batchStart < .seconds(600) else { throw CLIError(message: "the batch's completion callback did not run within 600 s") }
            try await Task.sleep(for: .milliseconds(5))
        }
        let batchTotal = ContinuousClock.now - batchStart
        worker.beginShutdown()
        _ = try? await task.value
        times = clock.snapshot()
        let batchEnds = batch.jobs.compactMap { times[$0.id]?.end }
        guard let batchLastEnd = batchEnds.max(), let callbackStart = times[callback]?.start else {
            throw CLIError(message: "the benchmark's batch has jobs without times")
        }
        return FanFigures(firstItem: firstStart - rootEnd, allItemsStarted: lastStart - rootEnd, fanIn: afterStart - lastEnd,
                          total: total, batchCallback: callbackStart - batchLastEnd, batchTotal: batchTotal)
    }
}

/// A pipeline step for the benchmark: notes when its handler starts and returns.
struct ChainStepJob: JobHandler {
    static let kind = "bench_chain_step"
    let clock: ChainClock
    /// A fan-out's root returns the list of this many items.
    var rootItems = 0
    func run(_ parameters: JSONValue, context: JobContext) async throws -> JSONValue {
        clock.started(context.id)
        defer { clock.ended(context.id) }
        if rootItems > 0, context.id.hasSuffix(".root") { return .array((0..<rootItems).map { .number(Double($0)) }) }
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
