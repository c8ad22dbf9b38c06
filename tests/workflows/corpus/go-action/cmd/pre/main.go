package main

// Lines starting with "//sh: " are what the test's stand-in `go` compiles.
//sh: echo "go pre for $INPUT_WHO"
//sh: echo "from_pre=yes" >> "$GITHUB_STATE"

func main() {}
