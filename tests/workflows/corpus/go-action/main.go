package main

//sh: echo "go main greets $INPUT_WHO, pre state=$STATE_from_pre"
//sh: echo "cwd is workspace=$(test "$PWD" = "$GITHUB_WORKSPACE" && echo yes)"
//sh: echo "greeting=hello $INPUT_WHO" >> "$GITHUB_OUTPUT"
//sh: echo "from_main=yes" >> "$GITHUB_STATE"
//sh: test "$INPUT_WHO" != fail

func main() {}
