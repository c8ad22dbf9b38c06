package main

//sh: echo "go post sees pre=$STATE_from_pre main=$STATE_from_main"

func main() {}
