import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import JobWorker
import Logging
import Pipelines
import Schedules
import Synchronization
import Testing

/// The jobs a test's target kind ran: id and payload, in order.
final class FiredJobs: Sendable {
    private let entries = Mutex<[(id: String, payload: JSONValue)]>([])
    func append(_ id: String, _ payload: JSONValue) { entries.withLock { $0.append((id, payload)) } }
    var ids: [String] { entries.withLock { $0.map(\.id) } }
    var payloads: [JSONValue] { entries.withLock { $0.map(\.payload) } }
}

/// The target kind of the tests' schedules: records each job it runs.
struct RecordFiringJob: JobHandler {
    static let kind = "record"
    let fired: FiredJobs
    func run(_ parameters: JSONValue, context: JobContext) async throws -> JSONValue {
        fired.append(context.id, parameters)
        return .null
    }
}

/// A pipeline engine stand-in: records each start, and refuses a run id seen before (as `run_create` does).
final class RecordingRunStarter: PipelineRunStarter {
    private let starts = Mutex<[(runID: String, pipeline: String, params: [String: JSONValue], date: String)]>([])
    func startRun(_ pipeline: ValidatedPipeline, params: [String: JSONValue], runID: String, firing: Date, zone: TimeZone) async throws -> Bool {
        let context = RunContext(runID: runID, pipeline: pipeline.definition.name, start: firing, zone: zone, params: params)
        return starts.withLock { starts in
            if starts.contains(where: { $0.runID == runID }) { return false }
            starts.append((runID, pipeline.definition.name, params, context.date))
            return true
        }
    }
    var runs: [(runID: String, pipeline: String, params: [String: JSONValue], date: String)] { starts.withLock { $0 } }
}

/// Cron schedules firing as delayed jobs (docs/PIPELINES.md, "Schedules"), on the test Redis with a clock that
/// runs faster than real time, so a per-minute schedule fires every second or so.
@Suite("Schedules", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct ScheduleTests {
    static func time(_ text: String) -> Date { ISO8601DateFormatter().date(from: text)! }

    /// A one-step pipeline (`hello`, queue `nightly`) as a schedule's target, its file read and removed at once.
    static func helloPipelineTarget() throws -> ScheduleDefinition.Target {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("jobfarm-sched-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("hello.yaml").path
        try "name: hello\nqueue: nightly\nparams:\n  who: world\nsteps:\n  - id: greet\n    kind: echo\n    payload: {text: \"hello ${params.who} on ${run.date}\"}\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        return try ScheduleDefinition.pipelineTarget(path: file, params: ["who": .string("farm")], knownKinds: ["echo"], at: "test")
    }

    static func everyMinute(_ name: String, missed: MissedRunPolicy = .skip, grace: Duration = .seconds(300), payload: JSONValue = .null) -> ScheduleDefinition {
        ScheduleDefinition(name: name, cron: "* * * * *", missed: missed, grace: grace,
                           target: .job(kind: RecordFiringJob.kind, queue: "sched", tier: nil, payload: payload))
    }

    func registry(_ book: ScheduleBook, _ fired: FiredJobs) -> HandlerRegistry {
        var registry = HandlerRegistry()
        registry.register(RecordFiringJob(fired: fired))
        registry.register(ScheduleFiringJob(book: book))
        return registry
    }

    /// Waits (real time, bounded) until `condition` holds.
    func waitUntil(_ limit: Duration, _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + limit
        while !condition(), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
    }

    @Test(.timeLimit(.minutes(1)))
    func twoSchedulersFireAPerMinuteScheduleOncePerMinute() async throws {
        let farm = try TestRedis.farm()
        let other = try JobFarm(configuration: farm.configuration)
        // 30× real time: a firing every 2 s; the first at 00:01:00, 1 s after the start.
        let clock = AcceleratedScheduleClock(start: Self.time("2026-06-01T00:00:30Z"), speed: 30)
        let fired = FiredJobs()
        let books = [ScheduleBook(farm: farm, clock: clock), ScheduleBook(farm: other, clock: clock)]
        let definition = Self.everyMinute("every-minute")
        // Both schedulers add the schedule and keep its chain (every 100 ms here, every minute in production).
        try await books[0].add([definition])
        try await books[1].add([definition])
        let chains = books.map { book in
            Task { try await ScheduleChainService(book: book, interval: .milliseconds(100)).run() }
        }
        defer { for chain in chains { chain.cancel() } }
        let expected = ["00:01:00", "00:02:00", "00:03:00"].map {
            ScheduleBook.targetJobID("every-minute", at: Self.time("2026-06-01T\($0)Z"))
        }
        try await withTestWorker(farm: farm, registry: registry(books[0], fired), queues: ["sched"], concurrency: 4) { _ in
            try await withTestWorker(farm: other, registry: registry(books[1], fired), queues: ["sched"], concurrency: 4) { _ in
                try await waitUntil(.seconds(20)) { fired.ids.count >= 3 && clock.now() >= Self.time("2026-06-01T00:03:30Z") }
            }
        }
        let ids = fired.ids
        #expect(Array(ids.prefix(3)) == expected, "\(ids)")
        #expect(Set(ids).count == ids.count, "a firing ran twice: \(ids)")
        // Each firing job ran once, and said what it fired.
        let firing = try #require(try await farm.status(id: ScheduleBook.firingJobID("every-minute", version: definition.version, at: Self.time("2026-06-01T00:02:00Z"))))
        #expect(firing.state == .succeeded)
        #expect(firing.result?["target"]?.stringValue == expected[1])
        #expect(firing.result?["next"]?.stringValue == "2026-06-01T00:03:00Z")
    }

    @Test(.timeLimit(.minutes(1)))
    func aMissedRunIsCaughtUpOnceOrSkipped() async throws {
        let farm = try TestRedis.farm()
        // 6× real time; the first firing (00:01:00) is due 1/6 s after the start.
        let clock = AcceleratedScheduleClock(start: Self.time("2026-06-01T00:00:59Z"), speed: 6)
        let fired = FiredJobs()
        let book = ScheduleBook(farm: farm, clock: clock)
        let catchUp = Self.everyMinute("catch", missed: .catchUpOnce, grace: .seconds(10))
        let skip = Self.everyMinute("skip", missed: .skip, grace: .seconds(10))
        try await book.add([catchUp, skip])
        // The farm is down from 00:00:59 to past 00:05:29: five firings missed, the last 29 s late (grace 10 s).
        clock.jump(by: 270)
        try await Task.sleep(for: .milliseconds(300))
        let first = Self.time("2026-06-01T00:01:00Z")
        let (caught, skipped) = try await withTestWorker(farm: farm, registry: registry(book, fired), queues: ["sched"], concurrency: 4) { _ in
            (try await farm.wait(for: ScheduleBook.firingJobID("catch", version: catchUp.version, at: first), queue: "sched", timeout: .seconds(10)),
             try await farm.wait(for: ScheduleBook.firingJobID("skip", version: skip.version, at: first), queue: "sched", timeout: .seconds(10)))
        }
        let latest = Self.time("2026-06-01T00:05:00Z")
        #expect(caught.result?["outcome"]?.stringValue == "fired")
        #expect(caught.result?["fired"]?.stringValue == "2026-06-01T00:05:00Z")
        #expect(caught.result?["dropped"] == .number(4))
        #expect(skipped.result?["outcome"]?.stringValue == "nothing_due")
        #expect(skipped.result?["dropped"] == .number(5))
        #expect(fired.ids == [ScheduleBook.targetJobID("catch", at: latest)])
        // Both chains go on at 00:06:00.
        let next = Self.time("2026-06-01T00:06:00Z")
        for definition in [catchUp, skip] {
            #expect(try await farm.status(id: ScheduleBook.firingJobID(definition.name, version: definition.version, at: next))?.state == .scheduled)
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func aQueueWithNoLiveWorkerFiresWhenOneComesBack() async throws {
        let farm = try TestRedis.farm()
        let clock = AcceleratedScheduleClock(start: Self.time("2026-06-01T00:00:59Z"), speed: 6)
        let fired = FiredJobs()
        let book = ScheduleBook(farm: farm, clock: clock)
        let definition = Self.everyMinute("lonely")
        try await book.add([definition])
        // No worker serves the queue when the firing is due; it waits in `scheduled`.
        try await Task.sleep(for: .milliseconds(700))
        #expect(fired.ids.isEmpty)
        let id = ScheduleBook.firingJobID("lonely", version: definition.version, at: Self.time("2026-06-01T00:01:00Z"))
        #expect(try await farm.status(id: id)?.state == .scheduled)
        let status = try await withTestWorker(farm: farm, registry: registry(book, fired), queues: ["sched"], concurrency: 2) { _ in
            let status = try await farm.wait(for: id, queue: "sched", timeout: .seconds(10))
            try await waitUntil(.seconds(5)) { !fired.ids.isEmpty }
            return status
        }
        #expect(status.result?["outcome"]?.stringValue == "fired")
        #expect(fired.ids == [ScheduleBook.targetJobID("lonely", at: Self.time("2026-06-01T00:01:00Z"))])
    }

    @Test(.timeLimit(.minutes(1)))
    func aChangedOrRemovedScheduleStopsItsOldChain() async throws {
        let farm = try TestRedis.farm()
        let clock = AcceleratedScheduleClock(start: Self.time("2026-06-01T00:00:59Z"), speed: 6)
        let fired = FiredJobs()
        let book = ScheduleBook(farm: farm, clock: clock)
        let first = Self.everyMinute("report", payload: .object(["v": .number(1)]))
        let changed = Self.everyMinute("report", payload: .object(["v": .number(2)]))
        #expect(first.version != changed.version)
        try await book.add([first])
        try await book.add([changed])
        let at = Self.time("2026-06-01T00:01:00Z")
        let (old, new) = try await withTestWorker(farm: farm, registry: registry(book, fired), queues: ["sched"], concurrency: 2) { _ in
            let old = try await farm.wait(for: ScheduleBook.firingJobID("report", version: first.version, at: at), queue: "sched", timeout: .seconds(10))
            let new = try await farm.wait(for: ScheduleBook.firingJobID("report", version: changed.version, at: at), queue: "sched", timeout: .seconds(10))
            try await waitUntil(.seconds(5)) { !fired.ids.isEmpty }
            return (old, new)
        }
        #expect(old.result?["outcome"]?.stringValue == "superseded")
        #expect(new.result?["outcome"]?.stringValue == "fired")
        #expect(fired.payloads == [.object(["v": .number(2)])])
        // The old chain enqueued nothing more; the new one its next firing.
        let next = Self.time("2026-06-01T00:02:00Z")
        #expect(try await farm.status(id: ScheduleBook.firingJobID("report", version: first.version, at: next)) == nil)
        #expect(try await farm.status(id: ScheduleBook.firingJobID("report", version: changed.version, at: next))?.state == .scheduled)
        // Removed: its pending firing does nothing and enqueues nothing.
        #expect(try await book.remove(["report"]) == 1)
        let outcome = try await book.fire(schedule: "report", version: changed.version, at: next)
        #expect(outcome.outcome == "removed")
        #expect(try await farm.status(id: ScheduleBook.firingJobID("report", version: changed.version, at: Self.time("2026-06-01T00:03:00Z"))) == nil)
        #expect(try await farm.status(id: ScheduleBook.targetJobID("report", at: next)) == nil)
    }

    @Test func aPipelineFiresThroughTheStarterOncePerTime() async throws {
        let farm = try TestRedis.farm()
        let target = try Self.helloPipelineTarget()
        let definition = ScheduleDefinition(name: "nightly-hello", cron: "30 2 * * *", timeZone: "Europe/Berlin", target: target)
        let starter = RecordingRunStarter()
        let clock = ManualScheduleClock(Self.time("2026-06-01T00:30:05Z"))
        let book = ScheduleBook(farm: farm, clock: clock, starter: starter)
        let next = try await book.add([definition])
        #expect(next["nightly-hello"] == Self.time("2026-06-02T00:30:00Z"))
        // The firing job of 02:30 Berlin (00:30 UTC) runs twice (a retry): one run.
        let at = Self.time("2026-06-01T00:30:00Z")
        let once = try await book.fire(schedule: "nightly-hello", version: definition.version, at: at)
        let twice = try await book.fire(schedule: "nightly-hello", version: definition.version, at: at)
        #expect(once.outcome == "fired" && !once.duplicate)
        #expect(twice.outcome == "fired" && twice.duplicate)
        #expect(once.target == ScheduleBook.runID("nightly-hello", at: at))
        let runs = starter.runs
        #expect(runs.count == 1)
        #expect(runs.first?.runID.hasPrefix("s-\(Int64(at.timeIntervalSince1970))-") == true)
        #expect(runs.first?.pipeline == "hello")
        #expect(runs.first?.params == ["who": .string("farm")])
        #expect(runs.first?.date == "2026-06-01")
        // Its firing jobs go to the pipeline's queue.
        #expect(try await farm.status(id: ScheduleBook.firingJobID("nightly-hello", version: definition.version, at: Self.time("2026-06-02T00:30:00Z")))?.queue == "nightly")
        // Without a starter, the firing fails visibly (not retried) after enqueuing the next one.
        let bare = ScheduleBook(farm: farm, clock: clock)
        await #expect(throws: JobError.self) { _ = try await bare.fire(schedule: "nightly-hello", version: definition.version, at: at) }
    }

    @Test func aPipelineFiresAsOneRunOfThePipelineEngine() async throws {
        let farm = try TestRedis.farm()
        let target = try Self.helloPipelineTarget()
        let definition = ScheduleDefinition(name: "nightly-hello", cron: "30 23 * * *", timeZone: "Europe/Berlin", target: target)
        let clock = ManualScheduleClock(Self.time("2026-06-01T21:30:05Z"))
        let book = ScheduleBook(farm: farm, clock: clock, starter: FarmRunStarter(farm: farm))
        _ = try await book.add([definition])
        // 23:30 in Berlin is 21:30 UTC the same day; fired twice (a retry of the firing job): one run.
        let at = Self.time("2026-06-01T21:30:00Z")
        let once = try await book.fire(schedule: "nightly-hello", version: definition.version, at: at)
        let twice = try await book.fire(schedule: "nightly-hello", version: definition.version, at: at)
        #expect(once.outcome == "fired" && !once.duplicate)
        #expect(twice.outcome == "fired" && twice.duplicate)
        let runID = ScheduleBook.runID("nightly-hello", at: at)
        let run = try #require(try await farm.runStatus(runID))
        #expect(run.pipeline == "hello" && run.state == "running")
        let greet = try #require(run.steps.first { $0.id == "greet" })
        #expect(greet.state == "running" && greet.queue == "nightly")
        // The root step's job is in line once.
        let jobID = try #require(greet.job)
        let job = try #require(try await farm.status(id: jobID, queue: "nightly"))
        #expect(job.state == .queued && job.kind == "echo")
        #expect(try await farm.stats(queues: ["nightly"]).first?.tiers.map(\.depth).reduce(0, +) == 1)
    }

    @Test func syncKeepsAFilesSchedulesAndLeavesTheOthers() async throws {
        let farm = try TestRedis.farm()
        let clock = ManualScheduleClock(Self.time("2026-06-01T00:00:30Z"))
        let book = ScheduleBook(farm: farm, clock: clock)
        try await book.add([Self.everyMinute("by-hand")])
        let yaml = """
            schedules:
              - name: a
                cron: "*/5 * * * *"
                job: {kind: record, queue: sched}
              - name: b
                cron: "0 3 * * *"
                timezone: Europe/Berlin
                missed: catch_up_once
                job: {kind: record, queue: sched, payload: {n: 1}}
            """
        let file = try ScheduleFile.parse(yaml: yaml, file: "schedules.yaml", knownKinds: nil)
        let definitions = try ScheduleDefinition.definitions(in: file, knownKinds: nil)
        let report = try await book.sync(definitions, origin: "schedules.yaml")
        #expect(report.added == ["a", "b"])
        #expect(report.firingsEnqueued == 2, "by-hand's next firing existed")
        let again = try await book.sync(definitions, origin: "schedules.yaml")
        #expect(again.unchanged == ["a", "b"] && again.added.isEmpty && again.firingsEnqueued == 0)
        let fewer = try await book.sync([definitions[1]], origin: "schedules.yaml")
        #expect(fewer.removed == ["a"])
        #expect(try await book.list().map(\.name) == ["b", "by-hand"])
        let stored = try #require(try await book.list().first { $0.name == "b" }?.definition)
        #expect(stored == definitions[1])
        #expect(stored.missed == .catchUpOnce && stored.timeZone == "Europe/Berlin")
        #expect(try await farm.status(id: ScheduleBook.firingJobID("b", version: stored.version, at: Self.time("2026-06-01T01:00:00Z")))?.state == .scheduled)
    }
}
