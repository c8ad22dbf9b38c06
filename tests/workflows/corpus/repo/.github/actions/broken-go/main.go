package main

//build-error: main.go:5:1: syntax error: unexpected }
func main() {
