"""reason: problems -> sampled solutions -> graded (rejection sampling) -> SFT data; verifier.

Data flows problems (math and code sources -> one problems file) -> prompts + generation
(n sampled solutions per problem) -> grading (math answers) and sandbox (code against its
tests, isolated) -> graded (grades, summaries, correct/incorrect pairs) -> sft_format
(accepted solutions -> chat SFT). collators (verification/generation/inference batches)
feed verifier (a regression head on (problem, proof, score)).
"""
