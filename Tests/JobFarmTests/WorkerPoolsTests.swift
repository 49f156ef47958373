import Foundation
import JobFarmTesting
import Testing
import WorkerPools

/// workers.yaml: the sample parses, and each mistake is reported with file, line and key.
@Suite("workers.yaml")
struct PoolsConfigurationTests {
    func error(_ text: String, cores: Int = 2) -> PoolsConfigurationError? {
        do {
            _ = try PoolsConfiguration.parse(text, path: "w.yaml", cores: cores)
            return nil
        } catch let error as PoolsConfigurationError {
            return error
        } catch {
            Issue.record("unexpected error \(error)")
            return nil
        }
    }

    @Test func theSampleFileParses() throws {
        let path = PackagePaths.root.appendingPathComponent("workers.yaml").path
        let pools = try PoolsConfiguration.load(path: path, cores: 2)
        #expect(pools.pools.map(\.name) == ["general", "ml"])
        let general = try pools.pool(named: "general")
        #expect(general.queues == ["default"])
        #expect(general.concurrency == 16)
        #expect(general.minProcesses == 1)
        let ml = try pools.pool(named: "ml")
        #expect(ml.servesMLQueue)
        #expect(ml.queues == ["ml"])
        #expect(ml.blasThreads == 1 && ml.computeThreads == nil)
        #expect(ml.minProcesses == 1 && ml.maxProcesses == 1)
    }

    @Test func theOldFlatFormatStillParses() throws {
        let pools = try PoolsConfiguration.parse("""
            pools:
              - name: general
                queues: default            # comment
                concurrency: 16
                processes: 1
              - name: all
                queues: "*"
            """, cores: 2)
        #expect(pools.pools[0].minProcesses == 1 && pools.pools[0].maxProcesses == 1)
        #expect(pools.pools[1].queues == nil)
        #expect(pools.pools[1].concurrency == 10)
    }

    @Test func everySettingIsRead() throws {
        let pools = try PoolsConfiguration.parse("""
            pools:
              - name: mixed
                queues: default:premium+standard,ml
                tier_policy: weighted:premium=6,standard=3,free=1
                concurrency: 3
                fetch_batch: 7
                shutdown_grace: 2.5
                blas_threads: 2
                compute_threads: 1
                batching: {max_batch: 16, max_delay_ms: 0}
                processes: {min: 0, max: 3}
            """, cores: 8)
        let pool = pools.pools[0]
        #expect(pool.queues == ["default", "ml"])
        #expect(pool.tiersByQueue == ["default": ["premium", "standard"]])
        #expect(pool.tierPolicy == "weighted:premium=6,standard=3,free=1")
        #expect(pool.concurrency == 3 && pool.fetchBatch == 7 && pool.shutdownGraceSeconds == 2.5)
        #expect(pool.blasThreads == 2 && pool.computeThreads == 1)
        #expect(pool.maxBatch == 16 && pool.maxBatchDelayMilliseconds == 0)
        #expect(pool.minProcesses == 0 && pool.maxProcesses == 3)
    }

    @Test func anMLPoolsDefaultMaximumFitsTheCores() throws {
        let text = """
            pools:
              - name: ml
                queues: ml
                concurrency: 4
            """
        // Default threads: 1 BLAS thread (concurrency > 1) × cores compute threads: one process fills the machine.
        #expect(try PoolsConfiguration.parse(text, cores: 2).pools[0].maxProcesses == 1)
        #expect(try PoolsConfiguration.parse(text, cores: 64).pools[0].maxProcesses == 1)
        let single = text + "\n    compute_threads: 1\n    blas_threads: 2"
        #expect(try PoolsConfiguration.parse(single, cores: 8).pools[0].maxProcesses == 4)
        // A general pool keeps 10.
        #expect(try PoolsConfiguration.parse("pools:\n  - name: g\n    queues: default", cores: 2).pools[0].maxProcesses == 10)
    }

    @Test func anUnknownKeyIsNamedWithItsLine() {
        let error = error("""
            pools:
              - name: general
                queues: default
                concurency: 16
            """)
        #expect(error?.path == "w.yaml")
        #expect(error?.line == 4)
        #expect(error?.key == "pools[0].concurency")
        #expect(error?.description.contains("allowed here: name, queues") == true, "\(String(describing: error))")
        #expect(error?.description.hasPrefix("w.yaml:4: pools[0].concurency") == true, "\(String(describing: error))")
    }

    @Test func anUnknownTopLevelKeyIsAnError() {
        let error = error("pool:\n  - name: a\n")
        #expect(error?.line == 1)
        #expect(error?.key == "pool")
    }

    @Test func aWrongTypeIsNamedWithItsLine() {
        let error = error("""
            pools:
              - name: general
                concurrency: many
            """)
        #expect(error?.line == 3)
        #expect(error?.key == "pools[0].concurrency")
        #expect(error?.message.contains("whole number ≥ 1") == true, "\(String(describing: error))")
        let list = self.error("pools:\n  - name: a\n    queues: [a, b]\n")
        #expect(list?.line == 3)
        #expect(list?.key == "pools[0].queues")
        #expect(self.error("pools: {}")?.key == "pools")
    }

    @Test func aBadQueueSpecIsNamedWithItsLine() {
        let tier = error("""
            pools:
              - name: general
                queues: default:gold
            """)
        #expect(tier?.line == 3)
        #expect(tier?.key == "pools[0].queues")
        #expect(tier?.message.contains("tier 'gold'") == true && tier?.message.contains("premium, standard, free") == true, "\(String(describing: tier))")
        let empty = error("pools:\n  - name: g\n    queues: default,,ml\n")
        #expect(empty?.line == 3)
        #expect(empty?.key == "pools[0].queues")
        #expect(error("pools:\n  - name: g\n    queues: a,a\n")?.message.contains("twice") == true)
    }

    @Test func minAboveMaxIsAnError() {
        let error = error("""
            pools:
              - name: general
                processes:
                  min: 4
                  max: 2
            """)
        #expect(error?.line == 4)
        #expect(error?.key == "pools[0].processes")
        #expect(error?.message.contains("min must be ≤ max") == true, "\(String(describing: error))")
        #expect(self.error("pools:\n  - name: g\n    processes: {min: 1, most: 2}\n")?.key == "pools[0].processes.most")
    }

    @Test func otherMistakes() {
        #expect(error("pools:\n  - queues: default\n")?.key == "pools[0].name")
        #expect(error("pools:\n  - name: a\n  - name: a\n")?.message.contains("earlier pool") == true)
        #expect(error("pools:\n  - name: a\n    tier_policy: fastest\n")?.key == "pools[0].tier_policy")
        #expect(error("")?.line == 1)
        let syntax = error("pools:\n  - name: a\n   queues: [\n")
        #expect(syntax?.line != nil && syntax?.message.contains("not valid YAML") == true, "\(String(describing: syntax))")
        let star = error("pools:\n  - name: a\n    queues: *\n")
        #expect(star?.line == 3 && star?.message.contains("queues: \"*\"") == true, "\(String(describing: star))")
        #expect(error("pools:\n  - name: a\n    name: b\n")?.message.contains("twice") == true)
        #expect(throws: PoolsConfigurationError.self) { try PoolsConfiguration.parse("pools:\n  - name: a\n").pool(named: "b") }
    }

    @Test func theREADMEsSampleAndErrorAreWhatTheParserDoes() throws {
        let readme = try String(contentsOf: PackagePaths.root.appendingPathComponent("README.md"), encoding: .utf8)
        let section = try #require(readme.range(of: "### Worker pools: `workers.yaml`").map { readme[$0.upperBound...] })
        let yaml = try #require(section.range(of: "```yaml\n").flatMap { start in
            section[start.upperBound...].range(of: "```").map { String(section[start.upperBound..<$0.lowerBound]) }
        })
        let pools = try PoolsConfiguration.parse(yaml, cores: 2)
        #expect(pools.pools.map(\.name) == ["general", "ml"])
        #expect(pools.pools[0].maxProcesses == 4 && pools.pools[1].maxBatch == 32)
        #expect(pools.pools[1].retryOverrides["inference"]?.maxAttempts == 5 && pools.pools[1].retryOverrides["inference"]?.capSeconds == 10)
        #expect(pools.pools[1].timeoutCaps["train"]?.seconds == 1800)
        let sample = try #require(section.range(of: "```\n").flatMap { start in
            section[start.upperBound...].range(of: "\n```").map { String(section[start.upperBound..<$0.lowerBound]) }
        })
        let mistake = "pools:\n  - name: general\n    queues: default\n    concurency: 16\n"
        #expect(throws: PoolsConfigurationError.self) { try PoolsConfiguration.parse(mistake) }
        do {
            _ = try PoolsConfiguration.parse(mistake)
        } catch {
            #expect("\(error)" == sample)
        }
    }

    @Test func restartDelaysDoubleUpToTheCap() {
        let delays = (1...7).map { PoolSupervisor.restartDelay(failures: $0, base: .seconds(1), maximum: .seconds(30)) }
        #expect(delays == [.seconds(1), .seconds(2), .seconds(4), .seconds(8), .seconds(16), .seconds(30), .seconds(30)])
    }
}
