import Foundation
import JobFarmTesting
import JobQueue
import Testing

/// `jobfarm schedule add|list|remove|sync` and `enqueue`'s duplicate answer, through the binary.
@Suite("Schedule and unique-job commands", .enabled(if: TestRedis.available, "needs JOBFARM_TEST_REDIS_URL (scripts/test sets it)"))
struct ScheduleCLITests {
    func jobfarm(_ farm: JobFarm, _ arguments: [String]) async throws -> (status: Int32?, output: String) {
        let child = try ChildProcess(arguments + ["--redis-url", TestRedis.url!, "--namespace", farm.configuration.namespace])
        let status = await child.waitForExit(timeout: .seconds(30))
        return (status, child.text)
    }

    @Test(.timeLimit(.minutes(1)))
    func scheduleCommandsAndDuplicates() async throws {
        let farm = try TestRedis.farm()
        let synced = try await jobfarm(farm, ["schedule", "sync", PackagePaths.root.appendingPathComponent("jobs/schedules.yaml").path])
        #expect(synced.status == 0, "\(synced.output)")
        #expect(synced.output.contains("added hourly-data-check, nightly-retrain, weekday-smoke-test; 3 firing job(s) enqueued"), "\(synced.output)")
        let added = try await jobfarm(farm, ["schedule", "add", "smoke", "--cron", "*/5 * * * *", "--kind", "echo", "--payload", #"{"a":1}"#])
        #expect(added.status == 0 && added.output.contains("smoke (version "), "\(added.output)")
        let listed = try await jobfarm(farm, ["schedule", "list"])
        #expect(listed.output.contains("nightly-retrain: \"0 2 * * *\" Europe/Berlin, missed: catch_up_once → pipeline"), "\(listed.output)")
        #expect(listed.output.contains("smoke: \"*/5 * * * *\" UTC, missed: skip → job echo on default"), "\(listed.output)")
        let removed = try await jobfarm(farm, ["schedule", "remove", "smoke"])
        #expect(removed.status == 0 && removed.output.contains("removed 1 of 1"), "\(removed.output)")
        let bad = try await jobfarm(farm, ["schedule", "add", "x", "--cron", "61 * * * *", "--kind", "echo"])
        #expect(bad.status != 0 && bad.output.contains("61"), "\(bad.output)")

        let first = try await jobfarm(farm, ["enqueue", "--kind", "noop", "--idempotency-key", "k", "--idempotency-window", "60"])
        let id = try #require(first.output.split(separator: "\n").last(where: { !$0.hasPrefix("warning") }).map(String.init))
        let again = try await jobfarm(farm, ["enqueue", "--kind", "noop", "--idempotency-key", "k"])
        #expect(again.output.contains("\(id) duplicate"), "\(again.output)")
    }
}
