import Foundation
import Pipelines
import Testing

@Suite("Readiness rules")
struct ReadinessTests {
    // a → b → d, a → c → d (d needs b and c), e independent.
    func graph(b: FailurePolicy = .stop, c: FailurePolicy = .stop, dTrigger: StepTrigger = .allPassed) -> PipelineGraph {
        PipelineGraph(steps: [
            .init(id: "a", parents: []),
            .init(id: "e", parents: [], onFailure: .stop),
            .init(id: "b", parents: ["a"], onFailure: b),
            .init(id: "c", parents: ["a"], onFailure: c),
            .init(id: "d", parents: ["b", "c"], trigger: dTrigger),
        ])
    }

    @Test func rootsAreReadyFirstThenChildrenWhenTheirLastParentPassed() {
        let g = graph()
        #expect(g.advance([:]).enqueue == ["a", "e"])
        #expect(g.advance(["a": .running, "e": .running]).enqueue == [])
        #expect(g.advance(["a": .passed, "e": .running]).enqueue == ["b", "c"])
        // The join waits for its last parent, then is enqueued once: the second call sees it running.
        #expect(g.advance(["a": .passed, "e": .passed, "b": .passed, "c": .running]).enqueue == [])
        let states: [String: StepState] = ["a": .passed, "e": .passed, "b": .passed, "c": .passed]
        #expect(g.advance(states).enqueue == ["d"])
        var after = states
        after["d"] = .running
        #expect(g.advance(after) == RunAdvance())
        after["d"] = .passed
        #expect(g.advance(after).outcome == .succeeded)
    }

    @Test func stopPolicySkipsEverythingWaitingAndLetsRunningStepsEnd() {
        let g = graph()
        let advance = g.advance(["a": .passed, "e": .running, "b": .notPassed, "c": .running])
        #expect(advance.enqueue == [])
        #expect(advance.skip == ["d"])
        #expect(advance.stoppedBy == "b")
        #expect(advance.outcome == nil)  // c and e still run
        let end = g.advance(["a": .passed, "e": .passed, "b": .notPassed, "c": .passed, "d": .skipped])
        #expect(end.outcome == .failed(step: "b"))
        // A failed root stops the independent branch from starting too.
        let early = g.advance(["a": .failed])
        #expect(early.skip == ["e", "b", "c", "d"])
        #expect(early.enqueue == [])
    }

    @Test func continuePolicySkipsOnlyWhatDependsOnTheStep() {
        let g = graph(b: .continue)
        let advance = g.advance(["a": .passed, "e": .passed, "b": .failed, "c": .running])
        #expect(advance.skip == ["d"])
        // d's own policy is stop: skipping it stops the run (its cause is b).
        #expect(advance.stoppedBy == "d")
        let g2 = PipelineGraph(steps: [
            .init(id: "a", parents: []),
            .init(id: "b", parents: ["a"], onFailure: .continue),
            .init(id: "x", parents: ["b"], onFailure: .continue),
            .init(id: "c", parents: ["a"]),
        ])
        let cont = g2.advance(["a": .passed, "b": .notPassed])
        #expect(cont.skip == ["x"])
        #expect(cont.enqueue == ["c"])
        #expect(cont.stoppedBy == nil)
        #expect(g2.advance(["a": .passed, "b": .notPassed, "x": .skipped, "c": .passed]).outcome == .succeeded)
    }

    @Test func anyPassedRunsWhenAllParentsEndedAndOnePassed() {
        let g = graph(b: .continue, c: .continue, dTrigger: .anyPassed)
        #expect(g.advance(["a": .passed, "e": .passed, "b": .notPassed, "c": .running]).enqueue == [])
        #expect(g.advance(["a": .passed, "e": .passed, "b": .notPassed, "c": .passed]).enqueue == ["d"])
        let none = g.advance(["a": .passed, "e": .passed, "b": .notPassed, "c": .failed])
        #expect(none.skip == ["d"])
        #expect(none.outcome == .failed(step: "d"))
    }

    @Test func allEndedRunsWhateverTheParentsDid() {
        let g = graph(b: .continue, c: .continue, dTrigger: .allEnded)
        #expect(g.advance(["a": .passed, "e": .passed, "b": .failed, "c": .cancelled]).enqueue == ["d"])
    }

    @Test func cancelledRunSkipsWaitingStepsAndEndsCancelled() {
        let g = graph()
        let advance = g.advance(["a": .passed, "e": .cancelled, "b": .cancelled, "c": .cancelled], cancelled: true)
        #expect(advance.skip == ["d"])
        #expect(advance.outcome == .cancelled)
    }

    @Test func advanceIsIdempotent() {
        let g = graph()
        let states: [String: StepState] = ["a": .passed, "e": .running]
        var after = states
        for id in g.advance(states).enqueue { after[id] = .running }
        #expect(g.advance(after).enqueue.isEmpty)
    }

    @Test func forEachStepStateFromItsItems() {
        #expect(combinedState(ofItems: [.passed, .running]) == .running)
        #expect(combinedState(ofItems: [.passed, .passed]) == .passed)
        #expect(combinedState(ofItems: []) == .passed)
        #expect(combinedState(ofItems: [.passed, .notPassed, .failed]) == .failed)
        #expect(combinedState(ofItems: [.notPassed, .passed]) == .notPassed)
    }
}

/// Tests/Fixtures/readiness-cases.json: the table of cases the engine's Lua script is checked against too.
@Suite("Readiness rule: the shared table of cases")
struct ReadinessTableTests {
    struct Case: Decodable {
        struct Step: Decodable {
            var id: String
            var parents: [String]
            var on_failure: String
            var trigger: String
        }
        struct Expect: Decodable {
            var enqueue: [String]
            var skip: [String]
            var stopped_by: String?
            var outcome: String?
        }
        var name: String
        var graph: [Step]
        var states: [String: String]
        var cancelled: Bool
        var expect: Expect
    }

    @Test func everyCaseGivesTheExpectedAdvance() throws {
        let url = DefinitionTests.repository.appendingPathComponent("Tests/Fixtures/readiness-cases.json")
        let cases = try JSONDecoder().decode([Case].self, from: Data(contentsOf: url))
        #expect(cases.count >= 15)
        for item in cases {
            let graph = PipelineGraph(steps: try item.graph.map { step in
                PipelineGraph.Step(id: step.id, parents: step.parents,
                                   onFailure: try #require(FailurePolicy(rawValue: step.on_failure)),
                                   trigger: try #require(StepTrigger(rawValue: step.trigger)))
            })
            let states = try item.states.mapValues { try #require(StepState(rawValue: $0)) }
            let advance = graph.advance(states, cancelled: item.cancelled)
            let outcome: String? = switch advance.outcome {
            case nil: nil
            case .succeeded: "succeeded"
            case .cancelled: "cancelled"
            case .failed(let step): "failed:\(step)"
            }
            #expect(advance.enqueue == item.expect.enqueue, "\(item.name)")
            #expect(advance.skip == item.expect.skip, "\(item.name)")
            #expect(advance.stoppedBy == item.expect.stopped_by, "\(item.name)")
            #expect(outcome == item.expect.outcome, "\(item.name)")
        }
    }
}
