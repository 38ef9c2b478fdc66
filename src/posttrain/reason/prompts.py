"""Domain-specific generation prompts for reasoning problems, as chat messages.

Math asks for numbered steps and a final `\\boxed{}` answer (what the grader extracts
first); code asks for a complete Python solution in one ```python block (the sandbox
runs the last such block). Both go through the tokenizer's chat template.
"""

from __future__ import annotations

MATH_SYSTEM = ("You are a careful mathematician. Solve problems step by step and "
               "state the final answer clearly.")
CODE_SYSTEM = ("You are an expert Python programmer. Think through the problem step by "
               "step, then write correct, complete code.")

MATH_INSTRUCTION = ("Solve the following problem step by step, numbering the steps "
                    "(Step 1: ..., Step 2: ...). Put your final answer in \\boxed{{}}.\n\n"
                    "Problem: {problem}")
CODE_FUNCTION_INSTRUCTION = (
    "Write a Python function `{entry_point}` that solves the task below. Explain your "
    "approach in a few short steps, then give the complete function (with any imports "
    "it needs) in a single ```python code block.\n\n{body}")
CODE_STDIN_INSTRUCTION = (
    "Write a Python program that solves the task below. It reads the input from standard "
    "input and prints the answer to standard output. Explain your approach in a few short "
    "steps, then give the complete program in a single ```python code block.\n\n{body}")


def user_message(problem: dict) -> str:
    if problem["domain"] == "math":
        return MATH_INSTRUCTION.format(problem=problem["problem"].strip())
    body = (problem.get("prompt") or problem["problem"]).strip("\n").rstrip()
    if isinstance(problem.get("tests"), list) or not problem.get("entry_point"):
        return CODE_STDIN_INSTRUCTION.format(body=body)
    if body.lstrip().startswith(("def ", "from ", "import ")) or "\ndef " in body:
        body = f"```python\n{body}\n```"  # HumanEval prompts are code: signature + docstring
    return CODE_FUNCTION_INSTRUCTION.format(entry_point=problem["entry_point"], body=body)


def system_message(domain: str) -> str:
    return MATH_SYSTEM if domain == "math" else CODE_SYSTEM


def messages(problem: dict) -> list[dict]:
    """Chat messages for one problem; the last one is the user's."""
    return [{"role": "system", "content": system_message(problem["domain"])},
            {"role": "user", "content": user_message(problem)}]


def render(tokenizer, problem: dict) -> str:
    """Prompt text through the chat template, ending where the assistant turn starts."""
    return tokenizer.apply_chat_template(messages(problem), tokenize=False, add_generation_prompt=True)
