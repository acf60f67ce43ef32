"""The phrase tables the demo's corpus (corpus.py) draws its documents from: roles, tag names, instruction
and remark sentences. Our own paraphrases: never a sentence of the R1-Zero template, and no tag contains "think"
or "answer". Changing a table changes the corpus (tests/test_demo_corpus.py pins its hash)."""

# Role pairs (asker, responder). Capitalised names; lower-case forms go after "the".
ROLES = [
    ("User", "Assistant"),
    ("Student", "Teacher"),
    ("Human", "Machine"),
    ("Learner", "Tutor"),
    ("Client", "Helper"),
    ("Kid", "Parent"),
    ("Player", "Bot"),
    ("Customer", "Agent"),
    ("Pupil", "Coach"),
    ("Person", "Model"),
    ("Friend", "Expert"),
]

# Tag names. None contains "think" or "answer": those two must come from the template, never the corpus.
TAGS = [
    "work",
    "steps",
    "scratch",
    "calc",
    "reasoning",
    "thought",
    "thoughts",
    "notes",
    "working",
    "plan",
    "draft",
    "logic",
    "reason",
    "mind",
    "process",
    "solve",
    "math",
    "idea",
    "check",
    "sketch",
    "result",
    "final",
    "ans",
    "out",
    "output",
    "value",
    "reply",
    "solution",
    "response",
    "total",
    "sum",
    "res",
    "number",
    "end",
    "verdict",
    "conclusion",
    "box",
    "a",
    "b",
    "x",
    "y",
    "r",
    "s",
    "t",
]
LETTERS = "abcdefghijklmnopqrstuvwxyz"

OPENERS = [
    "A chat between {A} and {B}.",
    "Below is a dialogue between {A} and {B}.",
    "{A} talks with {B}.",
    "The following is an exchange between a {a} and a {b}.",
    "Here is a conversation in which {A} asks and {B} replies.",
    "A short conversation with {B}.",
    "{B} helps {A} with some arithmetic.",
    "",
    "",
]
ROLE_LINES = [
    "{A} gives a problem and {B} works it out.",
    "The {a} asks something and the {b} replies.",
    "The {a} has a question for the {b}.",
    "{A} asks a question; {B} solves it.",
    "The {b} answers every question the {a} asks.",
    "",
    "",
]
PROCESS_LINES = [
    "The {b} first works out the reasoning and then provides the result.",
    "{B} thinks it over first, then gives the final answer.",
    "{B} first thinks about the steps and then replies with the answer.",
    "{B} writes a reasoning process before the answer.",
    "First comes the reasoning, then the answer.",
    "The {b} keeps the working in mind and then provides the {a} with a number.",
    "",
    "",
]
FORMAT_LINES = [
    "The reasoning and the final answer are placed within <{X}> </{X}> and <{Y}> </{Y}> tags, "
    "respectively.",
    "Put the working inside <{X}> </{X}> and the answer inside <{Y}> </{Y}>.",
    "Use <{X}> </{X}> tags for the reasoning process and <{Y}> </{Y}> tags for the answer.",
    "Write the steps in <{X}> </{X}>, then the result in <{Y}> </{Y}>.",
    "The reply has two parts, enclosed in <{X}> </{X}> and <{Y}> </{Y}> tags.",
    "Working goes between <{X}> and </{X}>; the final answer goes between <{Y}> and </{Y}>.",
    "Reasoning is enclosed within <{X}> </{X}> tags and the result within <{Y}> </{Y}> tags.",
]
EXAMPLES = [
    " i.e., <{X}> {w} here </{X}> <{Y}> {v} here </{Y}>.",
    " For example: <{X}> {w} </{X}> <{Y}> {v} </{Y}>.",
    " Like this: <{X}> ... </{X}> <{Y}> ... </{Y}>.",
    "",
    "",
]
WORK_WORDS = ["reasoning", "steps", "work", "working", "thoughts", "the reasoning", "the steps"]
VALUE_WORDS = ["result", "number", "final result", "the result", "value", "total"]

QUESTIONS = [
    "Compute {e}",
    "What is {e}?",
    "Calculate {e}.",
    "Find {e}.",
    "{e} = ?",
    "Work out {e}.",
    "Evaluate {e}",
    "How much is {e}?",
    "Compute {e}.",
    "What does {e} equal?",
]
DIRECT_REMARKS = [
    "easy",
    "this is quick",
    "I can do it in my head",
    "mental math",
    "simple",
    "quick sum",
    "it adds up",
    "I know this one",
    "just add and subtract",
    "no need to write it out",
]
