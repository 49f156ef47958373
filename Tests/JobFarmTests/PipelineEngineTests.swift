import Foundation
import JobFarmTesting
import JobProtocol
import JobQueue
import Pipelines
import RedisClient
import Testing

/// The pipeline engine against the real Redis: run records advanced by the run scripts, notices written by the
/// scripts that end jobs (docs/PIPELINES.md, "Engine design").
@Suite("Pipeline engine", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct PipelineEngineTests {
    static func pipeline(_ yaml: String) throws -> ValidatedPipeline {
        try ValidatedPipeline.validate(yaml: yaml, file: "test.yaml", knownKinds: nil)
    }

    /// Waits until the run ended and returns its status.
    static func ended(_ farm: JobFarm, _ runID: String, timeout: Duration = .seconds(20)) async throws -> RunStatus {
        var last: RunStatus?
        try await eventually(timeout: timeout, "run \(runID) ends") {
            last = try await farm.runStatus(runID)
            return last?.isFinal == true
        }
        return try #require(last)
    }

    static func step(_ status: RunStatus, _ id: String) throws -> RunStatus.Step {
        try #require(status.steps.first { $0.id == id })
    }

    @Test func aFailingMiddleStepStopsItsChildrenAndSaysWhy() async throws {
        let farm = try TestRedis.farm()
        let pipeline = try Self.pipeline("""
            name: stops
            steps:
              - id: a
                kind: echo
                payload: {n: 1}
              - id: b
                kind: fail
                needs: [a]
                max_attempts: 1
                payload: {message: "broken on purpose", retryable: false}
              - id: c
                kind: echo
                needs: [b]
              - id: d
                kind: echo
                needs: [c]
              - id: side
                kind: echo
                needs: [a]
                payload: "${steps.a.result.n}"
            """)
        try await withWorker(farm: farm) { _ in
            let run = try await farm.startRun(pipeline)
            #expect(run.created && run.state == "running")
            let status = try await Self.ended(farm, run.runID)
            #expect(status.state == "failed")
            #expect(status.stoppedBy == "b")
            #expect(try Self.step(status, "a").state == "passed")
            let b = try Self.step(status, "b")
            #expect(b.state == "failed")
            #expect(b.reason?.contains("broken on purpose") == true, "\(b.reason ?? "-")")
            let c = try Self.step(status, "c")
            #expect(c.state == "skipped")
            #expect(c.reason == "parent b failed")
            #expect(c.job == nil)
            #expect(try Self.step(status, "d").state == "skipped")
            let side = try Self.step(status, "side")
            #expect(side.state == "passed", "a branch already running finishes")
            #expect(side.result == .number(1), "a whole template keeps its JSON type")
            // The skipped steps' jobs were never enqueued.
            #expect(try await farm.status(id: "\(run.runID).c", queue: "default") == nil)
        }
    }

    @Test func aValidationThatDidNotPassBlocksPromotion() async throws {
        let farm = try TestRedis.farm()
        let pipeline = try Self.pipeline("""
            name: gate
            steps:
              - id: validate
                kind: echo
                payload: {candidate: "digits-mlp:2", passed: false}
                pass_when: result.passed == true
                on_failure: continue
              - id: promote
                kind: echo
                needs: [validate]
                trigger: any_passed
                payload: {candidates: ["${steps.validate.result}"]}
            """)
        try await withWorker(farm: farm) { _ in
            let run = try await farm.startRun(pipeline)
            let status = try await Self.ended(farm, run.runID)
            #expect(status.state == "failed")
            #expect(status.stoppedBy == "promote")
            let validate = try Self.step(status, "validate")
            #expect(validate.state == "not_passed")
            #expect(validate.reason?.contains("result.passed == true") == true, "\(validate.reason ?? "-")")
            #expect(validate.result?["passed"] == .bool(false), "the result is kept although it did not pass")
            let promote = try Self.step(status, "promote")
            #expect(promote.state == "skipped")
            #expect(promote.reason == "no parent passed (validate not_passed)")
            #expect(try await farm.status(id: "\(run.runID).promote", queue: "default") == nil)
        }
    }

    /// Two workers report the two parents of a join at the same instant, 200 times: the join is claimed once and its
    /// job exists once.
    @Test(.timeLimit(.minutes(2)))
    func twoParentsEndingAtOnceEnqueueTheJoinOnce() async throws {
        let farm = try TestRedis.farm()
        let keys = QueueKeys(namespace: farm.configuration.namespace, queue: "default")
        let pipeline = try Self.pipeline("""
            name: join
            steps:
              - {id: a, kind: echo}
              - {id: b, kind: echo}
              - {id: c, kind: echo, needs: [a, b]}
            """)
        let one = RedisClient(configuration: farm.configuration.redis, name: "one")
        let two = RedisClient(configuration: farm.configuration.redis, name: "two")
        let look = RedisClient(configuration: farm.configuration.redis, name: "look")
        defer { for client in [one, two, look] { client.close() } }
        for round in 0..<200 {
            let run = try await farm.startRun(pipeline, runID: "race-\(round)")
            let parents = try await farm.fetch(queue: "default", count: 10, worker: "w", on: look)
            try #require(parents.count == 2, "round \(round): the two roots")
            async let first = farm.report([(parents[0], .succeeded(result: "1"))], queue: "default", on: one)
            async let second = farm.report([(parents[1], .succeeded(result: "2"))], queue: "default", on: two)
            _ = try await (first, second)
            let join = "\(run.runID).c"
            let line = try await look.send([RedisCommand("LRANGE", keys.tier("standard"), "0", "-1")])[0].array?.compactMap(\.string) ?? []
            #expect(line == [join], "round \(round): the join is in line once, nothing else")
            let claims = try await look.send([RedisCommand("HVALS", "\(farm.configuration.namespace):{run:\(run.runID)}:claims")])[0].array ?? []
            var named = 0
            for text in claims.compactMap(\.string) {
                for claim in (try JSONValue(parsing: text)).items where claim.items.first == .string("c") { named += 1 }
            }
            #expect(named == 1, "round \(round): the join was claimed \(named) times")
            // Finish the run, so the next round starts from an empty line.
            let last = try await farm.fetch(queue: "default", count: 10, worker: "w", on: look)
            try #require(last.map(\.id) == [join])
            _ = try await farm.report([(last[0], .succeeded(result: "3"))], queue: "default", on: look)
            #expect(try await farm.runStatus(run.runID)?.state == "succeeded")
        }
    }

    @Test func aForEachStepFansOutAndItsChildGetsTheList() async throws {
        let farm = try TestRedis.farm()
        let pipeline = try Self.pipeline("""
            name: fan
            params:
              shards: [p0, p1, p2]
            steps:
              - id: fan
                kind: echo
                for_each: ${params.shards}
                payload: {shard: "${item}", run: "${run.id}"}
              - id: none
                kind: echo
                for_each: []
              - id: after
                kind: echo
                needs: [fan, none]
                payload: {all: "${steps.fan.result}", empty: "${steps.none.result}"}
            """)
        try await withWorker(farm: farm) { _ in
            let run = try await farm.startRun(pipeline)
            let status = try await Self.ended(farm, run.runID)
            #expect(status.state == "succeeded")
            let fan = try Self.step(status, "fan")
            #expect(fan.items == 3 && fan.endedItems == 3)
            #expect(fan.result?.items.compactMap { $0["shard"]?.stringValue } == ["p0", "p1", "p2"])
            #expect(try Self.step(status, "none").state == "passed")
            let after = try Self.step(status, "after")
            #expect(after.result?["all"]?.items.count == 3)
            #expect(after.result?["empty"] == .array([]))
        }
    }

    @Test func aTemplateThatCannotBeResolvedFailsItsStep() async throws {
        let farm = try TestRedis.farm()
        let pipeline = try Self.pipeline("""
            name: typo
            steps:
              - id: train
                kind: echo
                payload: {model: "m:1"}
              - id: use
                kind: echo
                needs: [train]
                payload: {m: "${steps.train.result.modle}"}
            """)
        try await withWorker(farm: farm) { _ in
            let run = try await farm.startRun(pipeline)
            let status = try await Self.ended(farm, run.runID)
            #expect(status.state == "failed")
            let use = try Self.step(status, "use")
            #expect(use.state == "failed")
            #expect(use.reason?.hasPrefix("template: ") == true && use.reason?.contains("modle") == true, "\(use.reason ?? "-")")
        }
    }

    @Test func aRunIDIsStartedOnce() async throws {
        let farm = try TestRedis.farm()
        let pipeline = try Self.pipeline("name: once\nsteps:\n  - {id: a, kind: echo}\n")
        let first = try await farm.startRun(pipeline, runID: "s-1764550800-0123456789ab")
        let second = try await farm.startRun(pipeline, runID: "s-1764550800-0123456789ab")
        #expect(first.created && !second.created && second.state == "running")
        #expect(try await farm.stats(queues: ["default"])[0].counters["enqueued"] == 1)
        await #expect(throws: JobFarmError.self) { try await farm.startRun(pipeline, params: ["nope": .number(1)]) }
    }

    @Test func cancelSkipsWhatWaitsAndEndsTheRunCancelled() async throws {
        let farm = try TestRedis.farm()
        let pipeline = try Self.pipeline("""
            name: long
            steps:
              - {id: slow, kind: sleep, payload: {seconds: 30}}
              - {id: next, kind: echo, needs: [slow]}
            """)
        try await withWorker(farm: farm) { _ in
            let run = try await farm.startRun(pipeline)
            try await eventually("the first step runs") {
                try await farm.status(id: "\(run.runID).slow", queue: "default")?.state == .running
            }
            #expect(try await farm.cancelRun(run.runID) == .cancelling(jobs: 1))
            let status = try await Self.ended(farm, run.runID)
            #expect(status.state == "cancelled")
            #expect(try Self.step(status, "slow").state == "cancelled")
            #expect(try Self.step(status, "next").state == "skipped")
            #expect(try Self.step(status, "next").reason == "run cancelled")
            #expect(try await farm.cancelRun(run.runID) == .alreadyEnded("cancelled"))
        }
    }

    /// A notice written with no worker around (a cancel from the CLI) is applied by the maintenance step; a claim
    /// whose enqueue never happened is repaired by the sweeper.
    @Test func staleNoticesAndLostClaimsAreRepaired() async throws {
        let farm = try TestRedis.farm()
        let keys = QueueKeys(namespace: farm.configuration.namespace, queue: "default")
        let pipeline = try Self.pipeline("""
            name: repair
            steps:
              - {id: a, kind: echo}
              - {id: b, kind: echo, on_failure: continue}
              - {id: c, kind: echo, needs: [b], trigger: all_ended}
            """)
        let run = try await farm.startRun(pipeline)
        #expect(try await farm.cancel(id: "\(run.runID).b", queue: "default") == .cancelled)
        #expect(try await redis(farm, "ZCARD", keys.prefix + "run-ends").int == 1)
        #expect(try await farm.applyStaleRunNotices(queue: "default", age: .zero) == 1)
        #expect(try await redis(farm, "ZCARD", keys.prefix + "run-ends").int == 0)
        var status = try #require(try await farm.runStatus(run.runID))
        #expect(try Self.step(status, "b").state == "cancelled")
        #expect(try Self.step(status, "c").state == "running", "all_ended runs after a cancelled parent")
        // A claimed step whose job vanished (its enqueue never happened): the sweeper enqueues it again.
        _ = try await redis(farm, "DEL", keys.job("\(run.runID).c"))
        _ = try await redis(farm, "LREM", keys.tier("standard"), "0", "\(run.runID).c")
        #expect(try await farm.sweepRuns(quiet: .zero) == 1)
        #expect(try await farm.status(id: "\(run.runID).c", queue: "default")?.state == .queued)
        try await withWorker(farm: farm) { _ in
            status = try await Self.ended(farm, run.runID)
        }
        #expect(status.state == "succeeded", "only a `continue` step did not pass")
    }

    /// Every script that ends a job leaves the run its notice: complete, fail to dead, fail cancelled, cancel of a
    /// waiting job, reap poison, reap and release meeting a pending cancel.
    @Test func everyEndingPathLeavesANotice() async throws {
        let farm = try TestRedis.farm(leaseDuration: .milliseconds(300), heartbeat: .milliseconds(100), maxLeaseLosses: 1)
        let keys = QueueKeys(namespace: farm.configuration.namespace, queue: "default")
        let client = RedisClient(configuration: farm.configuration.redis, name: "paths")
        defer { client.close() }
        let ids = ["complete", "dead", "failcancel", "waiting", "poison", "reapcancel", "releasecancel"]
        var yaml = "name: paths\nsteps:\n"
        for id in ids { yaml += "  - {id: \(id), kind: echo, on_failure: continue}\n" }
        let run = try await farm.startRun(try Self.pipeline(yaml))
        func job(_ step: String) -> String { "\(run.runID).\(step)" }
        func notice(_ step: String) async throws -> JSONValue? {
            try await client.send([RedisCommand("HGET", keys.prefix + "run-ends:data", job(step))])[0].string.map { try JSONValue(parsing: $0) }
        }
        #expect(try await farm.cancel(id: job("waiting"), queue: "default") == .cancelled)
        let leased = try await farm.fetch(queue: "default", count: 10, worker: "w", on: client)
        #expect(leased.count == ids.count - 1)
        func leasedJob(_ step: String) throws -> LeasedJob { try #require(leased.first { $0.id == job(step) }) }
        // Reported without the worker's drain: the raw scripts' replies (2 = recorded, left a notice).
        let prefix = [keys.prefix]
        let completeScript = RedisScript(name: "complete", source: QueueScripts.complete.source)
        let failScript = RedisScript(name: "fail", source: QueueScripts.fail.source)
        let done = try await client.run(completeScript, keys: prefix, arguments: ["default", "0", job("complete"), try leasedJob("complete").token, #"{"ok":true}"#])
        #expect(done.array?.compactMap(\.int) == [2])
        let failed = try await client.run(failScript, keys: prefix, arguments: [
            "default", "0", job("dead"), try leasedJob("dead").token, "non_retryable", "boom", "0",
            job("failcancel"), try leasedJob("failcancel").token, "cancelled", "cancelled by request", "0",
        ])
        #expect(failed.array?.compactMap(\.int) == [2, 2])
        #expect(try await farm.cancel(id: job("reapcancel"), queue: "default") == .cancelling)
        #expect(try await farm.cancel(id: job("releasecancel"), queue: "default") == .cancelling)
        #expect(try await farm.release([try leasedJob("releasecancel")], queue: "default", on: client) == 0)
        try await Task.sleep(for: .milliseconds(400))  // the poison and reapcancel leases expire
        _ = try await RedisWorkerDriver(farm: farm).reapExpiredLeases(queue: "default")
        let expected = ["complete": "succeeded", "dead": "dead", "failcancel": "cancelled", "waiting": "cancelled",
                        "poison": "dead", "reapcancel": "cancelled", "releasecancel": "cancelled"]
        for (step, state) in expected {
            let found = try await notice(step)
            #expect(found?["state"]?.stringValue == state, "\(step): \(found?.jsonText ?? "no notice")")
            #expect(found?["run"]?.stringValue == run.runID && found?["step"]?.stringValue == step)
        }
        #expect(try await notice("complete")?["result"]?.stringValue == #"{"ok":true}"#)
        #expect(try await notice("poison")?["reason"]?.stringValue == "poison")
        #expect(try await farm.applyStaleRunNotices(queue: "default", age: .zero) == ids.count)
        let status = try await Self.ended(farm, run.runID)
        #expect(status.state == "succeeded", "every step is `continue`")
        #expect(status.steps.map(\.state) == ["passed", "failed", "cancelled", "cancelled", "failed", "cancelled", "cancelled"])
    }

    /// Tests/Fixtures/readiness-cases.json through the real `runAdvance` script (an empty job id applies the rule to
    /// the states as written), as PipelinesTests runs it through `PipelineGraph.advance`.
    @Test func theLuaRuleGivesTheSharedTableOfCases() async throws {
        let farm = try TestRedis.farm()
        let client = RedisClient(configuration: farm.configuration.redis, name: "rule")
        defer { client.close() }
        let url = PackagePaths.root.appendingPathComponent("Tests/Fixtures/readiness-cases.json")
        let cases = try JSONValue(parsing: Data(contentsOf: url))
        #expect(cases.items.count >= 15)
        let script = RedisScript(name: RunScripts.advance.name, source: RunScripts.advance.source)
        for (index, item) in cases.items.enumerated() {
            let name = item["name"]?.stringValue ?? "case \(index)"
            let runID = "rule-\(index)"
            let prefix = "\(farm.configuration.namespace):{run:\(runID)}:"
            var steps: [String] = []
            if case .object(let states)? = item["states"] {
                for (id, state) in states { steps += [id, state.stringValue ?? ""] }
            }
            var commands = [RedisCommand("HSET", prefix + "run", "graph", (item["graph"] ?? .array([])).jsonText,
                                         "cancel", item["cancelled"] == .bool(true) ? "1" : "0", "state", "running",
                                         "queues", "{}", "for_each", "{}", "retention", "0")]
            if !steps.isEmpty { commands.append(RedisCommand(["HSET", prefix + "steps"] + steps)) }
            _ = try await client.send(commands)
            let reply = try await client.run(script, keys: [prefix], arguments: [runID, "", "", "", "", "", ""])
            let parts = try #require(reply.array, "\(name): \(reply)")
            let enqueue = (parts[0].array ?? []).compactMap { $0.array?.first?.string }
            let skip = (parts[1].array ?? []).compactMap(\.string)
            let stoppedBy = parts[2].string.flatMap { $0.isEmpty ? nil : $0 }
            let outcome = parts[3].string.flatMap { $0.isEmpty ? nil : $0 }
            let expect = try #require(item["expect"])
            #expect(enqueue == expect["enqueue"]?.items.compactMap(\.stringValue), "\(name)")
            #expect(skip == expect["skip"]?.items.compactMap(\.stringValue), "\(name)")
            #expect(stoppedBy == expect["stopped_by"]?.stringValue, "\(name)")
            #expect(outcome == expect["outcome"]?.stringValue, "\(name)")
        }
    }
}

extension JSONValue {
    /// The elements of a list (empty for anything else).
    var items: [JSONValue] {
        if case .array(let values) = self { return values }
        return []
    }
}
