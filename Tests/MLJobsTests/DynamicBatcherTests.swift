import JobFarmTesting
import Compute
import Foundation
import MLJobs
import Testing

@Suite("Dynamic batcher")
struct DynamicBatcherTests {
    @Test("concurrent requests share passes up to maxBatch rows; each gets its own rows back")
    func groupsRequests() async throws {
        let model = try randomModel(inputs: 8, hidden: 16, outputs: 4)
        let batcher = DynamicBatcher(configuration: .init(maxBatch: 8, maxDelay: .milliseconds(20), dispatchWhenIdle: false), executor: ComputeExecutor(threads: 1))
        var rng = SeededRandom(seed: 11)
        let inputs = (0..<20).map { _ in (0..<8).map { _ in rng.nextUnitFloat() } }
        let answers = try await withThrowingTaskGroup(of: (Int, DynamicBatcher.Answer).self) { group in
            for (index, row) in inputs.enumerated() {
                group.addTask { (index, try await batcher.submit(key: "m", model: model, rows: row, count: 1)) }
            }
            var result = [Int: DynamicBatcher.Answer]()
            for try await (index, answer) in group { result[index] = answer }
            return result
        }
        for (index, row) in inputs.enumerated() {
            let answer = try #require(answers[index])
            let expected = try model.logits(rows: row, batch: 1)
            #expect(answer.logits.count == 4)
            for (a, b) in zip(answer.logits, expected) { #expect(abs(a - b) <= 1e-5 * max(1, abs(b))) }
            #expect(answer.batchRows <= 8)
        }
        let passes = batcher.passes
        #expect(passes >= 3, "20 rows at most 8 per pass")
        #expect(passes < 20, "requests were grouped")
        #expect(answers.values.contains { $0.batchRequests > 1 })
    }

    @Test("an idle batcher answers a lone request at once when dispatchWhenIdle is on")
    func eagerWhenIdle() async throws {
        let model = try randomModel()
        let batcher = DynamicBatcher(configuration: .init(maxBatch: 64, maxDelay: .seconds(5)), executor: ComputeExecutor(threads: 1))
        let start = ContinuousClock.now
        let answer = try await batcher.submit(key: "m", model: model, rows: [Float](repeating: 0.1, count: 8), count: 1)
        #expect(answer.batchRequests == 1)
        #expect(ContinuousClock.now - start < .seconds(2), "did not wait for maxDelay")
    }

    @Test("with Triton's rule a lone request waits about maxDelay")
    func loneRequest() async throws {
        let model = try randomModel()
        let batcher = DynamicBatcher(configuration: .init(maxBatch: 64, maxDelay: .milliseconds(30), dispatchWhenIdle: false), executor: ComputeExecutor(threads: 1))
        let start = ContinuousClock.now
        let answer = try await batcher.submit(key: "m", model: model, rows: [Float](repeating: 0.1, count: 8), count: 1)
        let elapsed = ContinuousClock.now - start
        #expect(answer.batchRequests == 1)
        #expect(elapsed >= .milliseconds(30))
        #expect(elapsed < .seconds(2))
    }

    @Test("different models never share a pass; disabled batching runs each alone; bad rows are refused alone")
    func keysAndDisabled() async throws {
        let a = try randomModel(seed: 1), b = try randomModel(seed: 2)
        let batcher = DynamicBatcher(configuration: .init(maxBatch: 4, maxDelay: .milliseconds(10)), executor: ComputeExecutor(threads: 2))
        let row = [Float](repeating: 0.3, count: 8)
        async let x = batcher.submit(key: "a", model: a, rows: row, count: 1)
        async let y = batcher.submit(key: "b", model: b, rows: row, count: 1)
        let (ra, rb) = try await (x, y)
        #expect(ra.logits == (try a.logits(rows: row, batch: 1)))
        #expect(rb.logits == (try b.logits(rows: row, batch: 1)))
        await #expect(throws: ComputeError.self) { try await batcher.submit(key: "a", model: a, rows: [1, 2, 3], count: 1) }
        await #expect(throws: ComputeError.self) { try await batcher.submit(key: "a", model: a, rows: row.map { _ in .nan }, count: 1) }

        let off = DynamicBatcher(configuration: .init(enabled: false), executor: ComputeExecutor(threads: 1))
        async let p = off.submit(key: "a", model: a, rows: row, count: 1)
        async let q = off.submit(key: "a", model: a, rows: row, count: 1)
        let (rp, rq) = try await (p, q)
        #expect(rp.batchRequests == 1 && rq.batchRequests == 1)
        #expect(off.passes == 2)
    }
}
